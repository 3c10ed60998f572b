"""Priors p(z): ``PyroModule`` s whose ``forward()`` returns a distribution with event shape (D,).

The model samples ``z`` from whatever a prior returns, inside the data plate, so the ELBO and the
importance-weighted estimator work unchanged for any prior added here. Adding a prior is one
class and one registry entry; a factory (or a user's class, :mod:`pyro_vae.registry`) asks for any of
``latent_dim``, ``image_shape``, ``components``, ``num_classes``, ``spec``, ``config``, ``guide``
by parameter name.

What a prior accepts or needs is an attribute of its class, read by the checks, the help, the
memory estimate and the docs: ``default_components`` (K without ``--prior-components``),
``takes_labels_ok`` (it serves a model kind whose networks take the label), ``given_labels`` (the
class a model whose p(z) depends on the label, p(z | y), builds for this name) and
``density_block_bytes`` (memory of one block of recomputed density evaluations per step).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from pyro.nn import PyroModule, PyroParam
from torch.utils.checkpoint import checkpoint

from ..registry import Registry


class StandardNormalPrior(PyroModule):
    """p(z) = N(0, I_D)."""

    analytic_kl = True  # KL(diagonal Normal || this) has a closed form
    takes_labels_ok = True

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)  # batch (), event (D,)


class LearnedGaussianPrior(PyroModule):
    """p(z) = N(m, diag s^2) with m and s learned (initialised at N(0, I)); given the label, one
    such Gaussian per label (:class:`LabelledGaussianPrior`)."""

    analytic_kl = True
    takes_labels_ok = True

    def __init__(self, latent_dim: int):
        super().__init__()
        self.loc = PyroParam(torch.zeros(latent_dim))
        self.scale = PyroParam(torch.ones(latent_dim), constraint=constraints.positive)

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class MixtureOfGaussiansPrior(PyroModule):
    """p(z) = sum_k pi_k N(z; m_k, diag s_k^2), K learned components (means start N(0, I)-spread)."""

    analytic_kl = False
    takes_labels_ok = True
    default_components = 10

    def __init__(self, latent_dim: int, components: int):
        super().__init__()
        self.logits = PyroParam(torch.zeros(components))
        self.locs = PyroParam(torch.randn(components, latent_dim))
        self.scales = PyroParam(torch.ones(components, latent_dim), constraint=constraints.positive)

    def forward(self) -> dist.TorchDistribution:
        mixing = dist.Categorical(logits=self.logits)  # pi         batch ()
        components = dist.Normal(self.locs, self.scales).to_event(1)  # batch (K,), event (D,)
        return dist.MixtureSameFamily(mixing, components)  # batch (), event (D,)


# Tomczak & Welling's initialisation of the pseudo-inputs: u = hardtanh(w), w ~ N(0.05, 0.01^2)
# (their code's defaults, pseudoinputs_mean / pseudoinputs_std).
VAMP_INIT_MEAN = 0.05
VAMP_INIT_STD = 0.01


# Memory for one block of log q(z_n | u_k) pairs; larger blocks only save Python overhead.
VAMP_BLOCK_BYTES = 256 * 2**20


def is_diagonal_normal(q: dist.TorchDistribution) -> bool:
    """Whether q is N(m, diag s^2) with event shape (D,): a Normal with one batch dim made event."""
    return (
        isinstance(q, torch.distributions.Independent)
        and q.reinterpreted_batch_ndims == 1
        and type(q.base_dist) in (dist.Normal, torch.distributions.Normal)
    )


def diagonal_normal_log_densities(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z_n; m_k, diag s_k^2) for every pair: z (N, D), loc and scale (K, D) -> (N, K).

    sum_d (z_d - m_d)^2 / s_d^2 = z^2 . w - 2 z . (m w) + m^2 . w with w = 1 / s^2, so the (N, K)
    matrix takes two matrix products instead of an (N, K, D) tensor, with D times less memory
    (docs/performance.md gives the speed-up for a VampPrior). The expansion cancels large
    terms, which in float32 costs up to ~1e-4 nats, so it is computed in float64 (float32 on MPS,
    which has no float64) and returned in z's dtype.
    """
    wide = torch.float32 if z.device.type == "mps" else torch.float64
    zw, locw, scalew = z.to(wide), loc.to(wide), scale.to(wide)
    precision = scalew.pow(-2)  # w_k = 1 / s_k^2   (K, D)
    squared = (
        zw.square() @ precision.T - 2 * zw @ (locw * precision).T + (locw.square() * precision).sum(-1)
    )  # sum_d (z_d - m_kd)^2 w_kd   (N, K)
    # log of the normaliser (2 pi)^(D/2) prod_d s_kd   (K,)
    log_norm = scalew.log().sum(-1) + 0.5 * z.shape[-1] * math.log(2 * math.pi)
    return (-0.5 * squared.clamp(min=0) - log_norm).to(z.dtype)


class VampMixture(TorchDistribution):
    """p(z) = (1/K) sum_k q(z | u_k), given the guide and its features h(u_k) of the K pseudo-inputs.

    For a diagonal Normal guide, ``log_prob(z)`` takes the (N, K) matrix log q(z_n | u_k) in closed
    form (:func:`diagonal_normal_log_densities`). For any other guide it computes that matrix in
    blocks of about ``block_bytes`` of autograd memory each (the guide's ``log_prob_bytes()`` per
    pair), each block by the guide's ``pair_log_prob(z, h)`` where it has one (all pairs of the
    block at once: the low-rank guide's Woodbury form, the IAF guide's one-pass inverse of its
    flows), else by its distribution's ``log_prob``. While gradients are recorded, each block is wrapped in
    ``torch.utils.checkpoint``: the forward pass keeps only the block's (n, c) result and the
    backward pass recomputes the block's graph, one block at a time (so gradients come from
    ``.backward()``, not ``torch.autograd.grad``). Values and gradients are those of the unblocked
    expression; the memory does not grow with N x K. Through Pyro's inverse of a flow (D sequential
    passes, each kept for autograd) a batch of 128 against 500 pseudo-inputs would need about 21 GB.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self, guide: PyroModule, features: torch.Tensor, latent_dim: int | None = None, block_bytes: int | None = None
    ):
        self.guide, self.features = guide, features  # features h(u_k)   (K, F)
        block_bytes = VAMP_BLOCK_BYTES if block_bytes is None else block_bytes
        pair_bytes = getattr(guide, "log_prob_bytes", lambda: 64 * 1024)()
        self.block_pairs = max(1, block_bytes // max(1, pair_bytes))
        # q(z | u_1), built once: the latent size (unless given) and whether the closed form applies,
        # so other guides never build the full (K,) distribution just to be checked
        first = guide.distribution_from_features(features[:1])  # batch (1,), event (D,)
        self.diagonal = is_diagonal_normal(first)
        latent_dim = first.event_shape[0] if latent_dim is None else latent_dim
        super().__init__(torch.Size(), torch.Size([latent_dim]), validate_args=False)

    @property
    def components(self) -> int:
        return self.features.shape[0]

    def _block(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """log q(z_n | u_k) for z (n, D) and the features h (c, F) of c pseudo-inputs -> (n, c):
        the guide's ``pair_log_prob`` where it has one, else its distribution's ``log_prob``
        over the (n, c) grid of pairs."""
        pair_log_prob = getattr(self.guide, "pair_log_prob", None)
        if pair_log_prob is not None:
            return pair_log_prob(z, h)
        q = self.guide.distribution_from_features(h)  # batch (c,), event (D,)
        return q.log_prob(z.unsqueeze(-2).expand(z.shape[0], h.shape[0], z.shape[-1]))  # (n, c)

    def component_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z | u_k) for every k: z (..., D) -> (..., K); for a diagonal Normal guide in closed
        form by matrix products, for any other guide block by block."""
        flat = z.reshape(-1, z.shape[-1])  # (N, D)
        n_all, k_all = flat.shape[0], self.components
        if self.diagonal:
            q = self.guide.distribution_from_features(self.features)  # batch (K,), event (D,)
            log_q = diagonal_normal_log_densities(flat, q.base_dist.loc, q.base_dist.scale)  # (N, K)
            return log_q.reshape(*z.shape[:-1], k_all)
        if n_all * k_all <= self.block_pairs:
            return self._block(flat, self.features).reshape(*z.shape[:-1], k_all)
        rows = min(n_all, self.block_pairs)  # z rows per block
        cols = max(1, min(k_all, self.block_pairs // rows))  # pseudo-inputs per block
        # checkpoint's reentrant form runs the forward without a graph (the non-reentrant form keeps
        # part of each block's graph); it needs an input that requires grad
        recompute = torch.is_grad_enabled() and (flat.requires_grad or self.features.requires_grad)
        out = []
        for r in range(0, n_all, rows):
            z_rows, blocks = flat[r : r + rows], []
            for c in range(0, k_all, cols):
                h = self.features[c : c + cols]
                if recompute:
                    blocks.append(checkpoint(self._block, z_rows, h, use_reentrant=True))
                else:
                    blocks.append(self._block(z_rows, h))
            out.append(torch.cat(blocks, dim=-1))  # (n, K)
        return torch.cat(out).reshape(*z.shape[:-1], k_all)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        # log p(z) = logsumexp_k log q(z | u_k) - log K      (...,)
        return torch.logsumexp(self.component_log_probs(z), dim=-1) - math.log(self.components)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        # k ~ Uniform{1..K}, then z ~ q(z | u_k): one draw per sample, not one per component
        with torch.no_grad():
            shape = torch.Size(sample_shape)
            k = torch.randint(self.components, (shape.numel(),), device=self.features.device)
            z = self.guide.distribution_from_features(self.features[k]).sample()  # (M, D)
            return z.reshape(*shape, *self.event_shape)


class VampPrior(PyroModule):
    """p(z) = (1/K) sum_k q(z | u_k): the guide's posterior averaged over K learned pseudo-inputs
    u_k (Tomczak & Welling 2018). The guide is held by reference, not as a submodule, so its
    parameters keep their own names and are shared by model and guide."""

    analytic_kl = False
    takes_labels_ok = False  # its pseudo-inputs have no labels
    default_components = 500  # Tomczak & Welling's K
    density_block_bytes = VAMP_BLOCK_BYTES  # log_prob recomputes its blocks (VampMixture)
    shares_guide_flows = True  # flow guides default to transforms shared by all inputs (--flow-context)

    def __init__(self, guide: PyroModule, image_shape: tuple[int, ...], components: int = 500):
        super().__init__()
        object.__setattr__(self, "_guide", guide)  # not a submodule: see the docstring
        self.pseudo_weights = PyroParam(torch.randn(components, *image_shape) * VAMP_INIT_STD + VAMP_INIT_MEAN)

    def pseudo_inputs(self) -> torch.Tensor:
        return F.hardtanh(self.pseudo_weights, 0.0, 1.0)  # u_k in [0, 1]   (K, C, H, W)

    def forward(self) -> dist.TorchDistribution:
        features = self._guide.features(self.pseudo_inputs())  # h(u_k)   (K, F)
        return VampMixture(self._guide, features)  # (1/K) sum_k q(z|u_k): batch (), event (D,)


class LabelledGaussianPrior(PyroModule):
    """p(z | y) = N(m_y, diag s_y^2): one learned mean and scale per label (start: N(0, I))."""

    analytic_kl = True
    label_conditional = True

    def __init__(self, latent_dim: int, num_classes: int):
        super().__init__()
        self.locs = PyroParam(torch.zeros(num_classes, latent_dim))
        self.scales = PyroParam(torch.ones(num_classes, latent_dim), constraint=constraints.positive)

    def forward(self, y: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(self.locs[y], self.scales[y]).to_event(1)  # batch y.shape, event (D,)


StandardNormalPrior.given_labels = StandardNormalPrior  # N(0, I) for every label
LearnedGaussianPrior.given_labels = LabelledGaussianPrior


def prior_components(config) -> int:
    """K of ``config.prior``: ``--prior-components``, else the prior's ``default_components`` (1
    for a prior that declares none)."""
    if config.prior_components is not None:
        return config.prior_components
    return getattr(PRIORS.resolve(config.prior), "default_components", 1)


def _prior_arguments(spec, config, guide) -> dict:
    """What a prior's constructor (or factory) may ask for, by parameter name."""
    return {
        "latent_dim": spec.latent_dim,
        "image_shape": spec.image_shape,
        "components": prior_components(config),
        "num_classes": spec.cond_dim,
        "spec": spec,
        "config": config,
        "guide": guide,
    }


PRIORS: Registry[PyroModule] = Registry("prior", arguments=_prior_arguments)
PRIORS.register("standard")(StandardNormalPrior)
PRIORS.register("learned")(LearnedGaussianPrior)
PRIORS.register("mog")(MixtureOfGaussiansPrior)
PRIORS.register("vamp")(VampPrior)
