"""Plain PyTorch encoders and decoders (no Pyro inside), chosen by name.

An *encoder* maps images ``(B, C, H, W)`` to features ``(B, F)``; a guide puts its own heads on
top. A *decoder* maps latents ``(B, D)`` to ``P`` parameter maps per pixel, ``(B, P * C, H, W)``,
where ``P`` is what the likelihood needs (1 for Bernoulli logits, 2 for a Gaussian's loc and
scale). Shapes come from the data's ``image_shape`` (flat vectors of D values are (1, 1, D)):
the MLPs take any shape, the conv nets any image of at least 8x8 (:func:`conv_plan`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ConfigError
from .registry import Registry


@dataclass(frozen=True)
class NetSpec:
    """What every network builder is told: the data's shape and the widths the user chose."""

    image_shape: tuple[int, ...]  # (C, H, W)
    latent_dim: int
    hidden: tuple[int, ...]
    cond_dim: int = 0  # width of a conditioning input (one-hot label), 0 if none
    activation: str = "relu"  # nonlinearity of the mlp nets' hidden layers: relu, tanh, softplus


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


def _mlp(widths: Sequence[int], activation: str = "relu") -> list[nn.Module]:
    """Linear + activation layers through ``widths`` (no activation after the last)."""
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(w_in, w_out))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
    return layers


class MLPEncoder(nn.Module):
    """x (B, C, H, W) -> flatten -> [Linear, activation] * len(hidden) -> features (B, hidden[-1])."""

    uses_activation = True  # --activation picks its nonlinearity (other nets have their own)

    def __init__(self, spec: NetSpec):
        super().__init__()
        in_dim = math.prod(spec.image_shape) + spec.cond_dim
        self.net = nn.Sequential(*_mlp([in_dim, *spec.hidden], spec.activation), ACTIVATIONS[spec.activation]())
        self.feature_dim = spec.hidden[-1]

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = _append(x.flatten(start_dim=-3), cond)  # (B, C*H*W [+ K])
        return self.net(h)  # (B, F)


class MLPDecoder(nn.Module):
    """z (B, D) -> [Linear, activation] * len(hidden) -> Linear -> (B, P * C, H, W)."""

    def __init__(self, spec: NetSpec, params_per_pixel: int):
        super().__init__()
        c, h, w = spec.image_shape
        self.out_shape = (params_per_pixel * c, h, w)
        widths = [spec.latent_dim + spec.cond_dim, *reversed(spec.hidden), math.prod(self.out_shape)]
        self.net = nn.Sequential(*_mlp(widths, spec.activation))

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_append(z, cond)).unflatten(-1, self.out_shape)  # (..., B, P*C, H, W)


def _append(h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """Concatenate a conditioning input (..., K) to h (..., W), broadcasting the leading dims of
    both: vectorized particles give z a leading dim the label lacks, and an enumerated label
    (C, 1, K) gives the label one that the images (B, W) lack."""
    if cond is None:
        return h
    lead = torch.broadcast_shapes(h.shape[:-1], cond.shape[:-1])
    return torch.cat([h.expand(*lead, h.shape[-1]), cond.expand(*lead, cond.shape[-1])], dim=-1)


CONV_FIRST_CHANNELS = 32  # channels of the first stride-2 block; each further block doubles them
CONV_MAX_CHANNELS = 512
CONV_SMALLEST_SIDE = 4  # halve the image while the result keeps at least this many pixels a side


def conv_plan(image_shape: tuple[int, ...]) -> tuple[list[int], list[tuple[int, int]]]:
    """Channels of the stride-2 blocks and the (H, W) after each, for images (C, H, W).

    The image is halved (4x4 kernel, stride 2, padding 1: side -> floor(side / 2)) while the shorter
    side stays at least 4 after halving, so it ends at about 4x4: 28 -> 14 -> 7 (2 blocks),
    32 -> 16 -> 8 -> 4 (3 blocks), 64 -> ... -> 4 (4 blocks). Channels start at 32 and double.
    """
    if len(image_shape) != 3:
        raise ConfigError(f"the conv nets need images of shape (C, H, W), got {image_shape}")
    c, h, w = image_shape
    sizes = [(h, w)]
    while min(sizes[-1]) // 2 >= CONV_SMALLEST_SIDE:
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    if len(sizes) == 1:
        raise ConfigError(
            f"the conv nets halve the image at least once down to about 4x4, so they need images of at "
            f"least 8x8; got {h}x{w}"
            + (" (flat vectors)" if (c, h) == (1, 1) else "")
            + ". Use --net mlp for this data (or --image-size to enlarge the images)"
        )
    channels = [min(CONV_FIRST_CHANNELS * 2**i, CONV_MAX_CHANNELS) for i in range(len(sizes) - 1)]
    return channels, sizes


class ConvEncoder(nn.Module):
    """x (B, C, H, W) -> n x [Conv 4x4 stride 2, BatchNorm, ReLU] (to about 4x4, channels 32, 64, ...)
    -> Linear, BatchNorm, ReLU -> features (B, F)."""

    def __init__(self, spec: NetSpec):
        super().__init__()
        channels, sizes = conv_plan(spec.image_shape)
        layers: list[nn.Module] = []
        for c_in, c_out in zip([spec.image_shape[0], *channels[:-1]], channels):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.conv = nn.Sequential(*layers)  # (B, C, H, W) -> (B, c_n, h_n, w_n)
        self.feature_dim = spec.hidden[-1]
        flat = channels[-1] * math.prod(sizes[-1])
        self.dense = nn.Sequential(
            nn.Linear(flat + spec.cond_dim, self.feature_dim), nn.BatchNorm1d(self.feature_dim), nn.ReLU()
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = _append(self.conv(x).flatten(start_dim=1), cond)  # (..., B, c_n * h_n * w_n [+ K])
        lead = h.shape[:-1]  # batch norm wants one batch dim: fold an enumerated label's dim into it
        return self.dense(h.reshape(-1, h.shape[-1])).reshape(*lead, self.feature_dim)  # (..., B, F)


class ConvDecoder(nn.Module):
    """z (B, D) -> Linear, BN, ReLU -> Linear, BN, ReLU to (c_n, h_n, w_n) -> the encoder's blocks
    mirrored: [ConvTranspose 4x4 stride 2, BN, ReLU] ... -> ConvTranspose to (B, P * C, H, W).
    Each transposed conv doubles the side, plus one where the encoder's halving rounded down."""

    def __init__(self, spec: NetSpec, params_per_pixel: int):
        super().__init__()
        channels, sizes = conv_plan(spec.image_shape)
        self.base_shape = (channels[-1], *sizes[-1])
        width = spec.hidden[-1]
        self.dense = nn.Sequential(
            nn.Linear(spec.latent_dim + spec.cond_dim, width),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Linear(width, math.prod(self.base_shape)),
            nn.BatchNorm1d(math.prod(self.base_shape)),
            nn.ReLU(),
        )
        outs = [*reversed(channels[:-1]), params_per_pixel * spec.image_shape[0]]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(reversed(channels), outs)):
            (h_in, w_in), (h_out, w_out) = sizes[-1 - i], sizes[-2 - i]
            layers.append(
                nn.ConvTranspose2d(
                    c_in, c_out, 4, stride=2, padding=1, output_padding=(h_out - 2 * h_in, w_out - 2 * w_in)
                )
            )
            if i < len(outs) - 1:
                layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = _append(z, cond)  # (..., B, D [+ K])
        lead = h.shape[:-1]  # batch norm wants one batch dim: fold particle dims into it
        out = self.deconv(self.dense(h.reshape(-1, h.shape[-1])).unflatten(-1, self.base_shape))
        return out.reshape(*lead, *out.shape[1:])  # (..., B, P*C, H, W)


class GatedDense(nn.Module):
    """Tomczak & Welling's gated dense layer: h = (W x + b) * sigmoid(V x + c)   (..., out)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.h = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.gate(x))


class GatedMLPEncoder(nn.Module):
    """x (B, C, H, W) -> flatten -> GatedDense * len(hidden) -> features (B, hidden[-1])
    (Tomczak & Welling 2018's encoder body; the guide adds its mean and scale heads)."""

    def __init__(self, spec: NetSpec):
        super().__init__()
        widths = [math.prod(spec.image_shape) + spec.cond_dim, *spec.hidden]
        self.net = nn.Sequential(*(GatedDense(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.feature_dim = spec.hidden[-1]

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_append(x.flatten(start_dim=-3), cond))  # (B, F)


class GatedMLPDecoder(nn.Module):
    """z (B, D) -> GatedDense * len(hidden) -> Linear -> (B, P * C, H, W)."""

    def __init__(self, spec: NetSpec, params_per_pixel: int):
        super().__init__()
        c, h, w = spec.image_shape
        self.out_shape = (params_per_pixel * c, h, w)
        widths = [spec.latent_dim + spec.cond_dim, *reversed(spec.hidden)]
        self.net = nn.Sequential(
            *(GatedDense(a, b) for a, b in zip(widths[:-1], widths[1:])),
            nn.Linear(widths[-1], math.prod(self.out_shape)),
        )

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_append(z, cond)).unflatten(-1, self.out_shape)  # (..., B, P*C, H, W)


def _glorot(layer: nn.Linear) -> None:  # W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)), b = 0
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


def _he(layer: nn.Linear) -> None:  # W ~ N(0, 2 / fan_in); biases as torch (Tomczak & Welling's he_init)
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")


# --init: name -> what it does to one nn.Linear (torch: PyTorch's default, left as it is)
INITIALIZERS = {"torch": None, "glorot": _glorot, "he": _he}


def initialize_linear_layers(module: nn.Module, scheme: str) -> None:
    """Re-initialize every ``nn.Linear`` inside ``module`` as :data:`INITIALIZERS` ``[scheme]``
    says: ``glorot`` (Glorot & Bengio 2010, as Burda et al.), ``he`` (Tomczak & Welling's code)."""
    if scheme not in INITIALIZERS:
        raise ConfigError(f"unknown initialisation {scheme!r}; choose one of: {', '.join(INITIALIZERS)}")
    if INITIALIZERS[scheme] is None:
        return
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                INITIALIZERS[scheme](layer)


def _encoder_arguments(spec: NetSpec) -> dict:
    """What an encoder's constructor may ask for, by parameter name."""
    return {
        "spec": spec,
        "image_shape": spec.image_shape,
        "latent_dim": spec.latent_dim,
        "hidden": spec.hidden,
        "cond_dim": spec.cond_dim,
        "activation": spec.activation,
    }


def _decoder_arguments(spec: NetSpec, params_per_pixel: int) -> dict:
    """What a decoder's constructor may ask for, by parameter name."""
    return {**_encoder_arguments(spec), "params_per_pixel": params_per_pixel}


# A network choice is a name registered in both, or the import path of an object whose
# ``encoder`` and ``decoder`` attributes are the two classes (e.g. a class holding them).
ENCODERS: Registry[nn.Module] = Registry("network", arguments=_encoder_arguments, member="encoder")
DECODERS: Registry[nn.Module] = Registry("network", arguments=_decoder_arguments, member="decoder")
ENCODERS.register("mlp")(MLPEncoder)
ENCODERS.register("conv")(ConvEncoder)
DECODERS.register("mlp")(MLPDecoder)
DECODERS.register("conv")(ConvDecoder)
ENCODERS.register("gated-mlp")(GatedMLPEncoder)
DECODERS.register("gated-mlp")(GatedMLPDecoder)


def build_encoder(name: str, spec: NetSpec) -> nn.Module:
    """The encoder called ``name`` (``mlp``, ``conv`` or ``gated-mlp``); it has a ``feature_dim`` attribute."""
    return ENCODERS.build(name, spec)


def build_decoder(name: str, spec: NetSpec, params_per_pixel: int) -> nn.Module:
    """The decoder called ``name`` (``mlp``, ``conv`` or ``gated-mlp``), emitting ``params_per_pixel`` maps."""
    return DECODERS.build(name, spec, params_per_pixel)
