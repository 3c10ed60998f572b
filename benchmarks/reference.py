"""Hand-written PyTorch references and the shared bookkeeping of the benchmarks (imported by
train_speed.py, eval_speed.py and engine_speed.py, which run as scripts from this folder).

The references use pyro-vae's own networks (``pyro_vae.nets``) from the same weights, so a ratio
measures what Pyro and the engine add around the arithmetic, not different arithmetic.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

import pyro
import torch
import torch.nn.functional as F
from torch import nn

SIZES = {
    "default": dict(hidden=(512, 512), latent_dim=32, batch_size=128),
    "tiny": dict(hidden=(64, 64), latent_dim=8, batch_size=16),
}


class TorchVAE(nn.Module):
    """pyro-vae's default VAE written by hand: the same encoder, heads and decoder (pyro_vae.nets),
    no Pyro. ``neg_elbo`` is -ELBO per image with one reparameterized z, the KL in closed form
    (``analytic_kl``, as TraceMeanField_ELBO) or Monte Carlo (as Trace_ELBO)."""

    def __init__(self, spec, net: str = "mlp", analytic_kl: bool = False):
        super().__init__()
        from pyro_vae.nets import build_decoder, build_encoder

        self.encoder = build_encoder(net, spec)
        self.loc_head = nn.Linear(self.encoder.feature_dim, spec.latent_dim)
        self.scale_head = nn.Linear(self.encoder.feature_dim, spec.latent_dim)
        self.decoder = build_decoder(net, spec, 1)
        self.analytic_kl = analytic_kl

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.loc_head(h), F.softplus(self.scale_head(h)) + 1e-4  # mu, sigma   (B, D)

    def log_px_given_z(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(-3).sum(-1)

    def neg_elbo(self, x: torch.Tensor) -> torch.Tensor:
        loc, scale = self.posterior(x)
        z = loc + scale * torch.randn_like(loc)
        recon = self.log_px_given_z(self.decoder(z), x)  # log p(x|z)   (B,)
        if self.analytic_kl:  # KL(N(mu, sigma^2) || N(0, 1))
            kl = 0.5 * (loc**2 + scale**2 - 2 * torch.log(scale) - 1).sum(-1)
        else:  # log q(z|x) - log p(z)
            kl = (
                torch.distributions.Normal(loc, scale).log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)
            ).sum(-1)
        return -(recon - kl)

    @torch.no_grad()
    def iwae_log_px(self, x: torch.Tensor, k: int, k_chunk: int) -> torch.Tensor:
        """log p_K(x) per image (B,), float64: the encoder once, K particles in chunks."""
        loc, scale = self.posterior(x)  # (B, D)
        q = torch.distributions.Normal(loc, scale)
        lse = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        for start in range(0, k, k_chunk):
            n = min(k_chunk, k - start)
            z = q.sample((n,))  # (n, B, D)
            logits = self.decoder(z.flatten(0, 1)).view(n, *x.shape)  # (n, B, C, H, W)
            log_w = (
                self.log_px_given_z(logits, x)
                + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
                - q.log_prob(z).sum(-1)
            )  # (n, B)
            lse = torch.logaddexp(lse, torch.logsumexp(log_w.double(), 0))
        return lse - math.log(k)


def copy_weights(vae, reference: TorchVAE) -> None:
    """The reference starts from the pyro-vae model's weights (guide: encoder and heads;
    model: decoder)."""
    guide = dict(vae.guide.named_parameters())
    model = dict(vae.model.named_parameters())
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.copy_(model[name] if name.startswith("decoder") else guide[name])


def alternate(blocks: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each ``blocks[name]()`` ``warmup`` times, then ``repeats`` rounds in turn (A B A B ...),
    so drifts in machine load hit every contender; seconds per call, per name."""
    for run in blocks.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in blocks}
    for _ in range(repeats):
        for name, run in blocks.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(v) for name, v in times.items()}


def machine() -> dict:
    """Where and when a benchmark ran: the JSON fields every benchmark writes."""
    return {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "python": sys.version.split()[0],
        "load_average_at_start": list(os.getloadavg()),
    }
