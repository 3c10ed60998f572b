"""The guide when some pixels are missing: q(z | x_obs, m), an amortized guide whose encoder reads
the zero-filled image and its mask stacked along the channels, [x * m, m] (2C, H, W) (Mattei &
Frellsen 2019; Nazabal et al. 2020). Without a mask the image is fully observed (m = 1), so
``encode``, reconstructions and the VampPrior's pseudo-inputs use the same encoder."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

MASK_CHANNELS = 1  # the mask adds one channel per image channel: C -> 2C


def masked_input_shape(image_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The encoder's input shape for images (C, H, W) and their masks: (2C, H, W)."""
    c, *rest = image_shape
    return (c * (1 + MASK_CHANNELS), *rest)


def masked_input(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[x * m, m] stacked along the channels, (..., 2C, H, W); m = 1 where ``mask`` is None."""
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    return torch.cat([x * m, m], dim=-3)


class MissingPixelsGuide(PyroModule):
    """q(z | x_obs, m) = q_inner(z | [x * m, m]): ``guide`` is any guide ``guide(x, y=None)`` built
    for inputs of :func:`masked_input_shape`; called as ``guide(x, mask)``."""

    def __init__(self, guide: PyroModule):
        super().__init__()
        self.guide = guide

    @property
    def analytic_kl(self) -> bool:  # the inner distribution's family decides
        return getattr(self.guide, "analytic_kl", False)

    def log_prob_bytes(self) -> int:
        return getattr(self.guide, "log_prob_bytes", lambda: 64 * 1024)()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.guide(masked_input(x, mask))  # z_i ~ q(z | x_obs,i, m_i)   (B, D)

    def distribution(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dist.TorchDistribution:
        """q(z | x_obs, m): batch shape (B,), event shape (D,); every value observed without ``mask``."""
        return self.guide.distribution(masked_input(x, mask))

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's features of fully observed images (the VampPrior's pseudo-inputs)."""
        return self.guide.features(masked_input(x))

    def distribution_from_features(self, h: torch.Tensor) -> dist.TorchDistribution:
        return self.guide.distribution_from_features(h)
