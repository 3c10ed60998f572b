"""Imputing missing values by self-normalised importance sampling (Mattei & Frellsen 2019, sec. 3):

    z_k ~ q(z | x_obs, m),   log w_k = log p(z_k) + log p(x_obs | z_k) - log q(z_k | x_obs, m)
    w~_k = softmax_k(log w_k)
    E[x_miss | x_obs] ~= sum_k w~_k E[x_miss | z_k]                  (the conditional mean)
    x_miss^(l) ~ p(x_miss | z_{k_l}),  k_l ~ Categorical(w~)         (multiple imputation)

Both are consistent as K grows for any proposal q that covers the posterior p(z | x_obs). The
model is used through ``prior_distribution()``, ``decode(z)`` (a distribution over images made of
independent per-value distributions) and the proposal's ``distribution``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..models.missing import observed_values

IMPUTATION_BUDGET = 2**25  # floats of E[x | z_k] held at once: particles x images x values


def imputation_batch(k: int, values: int) -> int:
    """Images imputed together so that K x images x values stays within :data:`IMPUTATION_BUDGET`."""
    return max(1, IMPUTATION_BUDGET // max(1, k * values))


@torch.no_grad()
def importance_imputation(
    model, proposal: Callable, x: torch.Tensor, mask: torch.Tensor, *, k: int, n: int | None = None
) -> torch.Tensor:
    """The missing values of each image in ``x`` (B, C, H, W) imputed given its observed values
    (``mask`` (B, C, H, W) bool, True where observed), the observed values returned as given.

    ``proposal(x, mask)`` is q(z | x_obs, m) (batch shape (B,), event shape (D,)). Without ``n``:
    the conditional mean, (B, C, H, W); with ``n``: n draws of x_miss per image from the
    resampled particles, (n, B, C, H, W). Draws come from the global random generators."""
    out = []
    step = imputation_batch(k, math.prod(x.shape[1:]))
    for start in range(0, x.shape[0], step):
        xb, mb = x[start : start + step], mask[start : start + step]
        out.append(_impute_batch(model, proposal, xb, mb, k, n))
    return torch.cat(out, dim=0 if n is None else 1)


def _impute_batch(model, proposal: Callable, x: torch.Tensor, mask: torch.Tensor, k: int, n: int | None):
    b = x.shape[0]
    x = x * mask  # zero-filled: nothing below reads a missing value
    q = proposal(x, mask)  # q(z | x_obs, m)   batch (B,), event (D,)
    z = q.sample((k,))  # (K, B, D)
    p_x = model.decode(z.reshape(k * b, -1))  # p(x | z_k), batch (K*B,)
    tiled_mask = mask.repeat(k, 1, 1, 1)  # (K*B, C, H, W), row k*B + i: image i
    log_lik = observed_values(p_x, tiled_mask).log_prob(x.repeat(k, 1, 1, 1)).view(k, b)  # log p(x_obs|z_k)
    # log w_k = log p(z_k) + log p(x_obs | z_k) - log q(z_k | x_obs, m)   (K, B)
    log_w = model.prior_distribution().log_prob(z) + log_lik - q.log_prob(z)
    weights = torch.softmax(log_w.double(), dim=0).to(x.dtype)  # w~_k   (K, B)
    if n is None:
        means = p_x.mean.view(k, b, *x.shape[1:])  # E[x | z_k]   (K, B, C, H, W)
        imputed = torch.einsum("kb,kb...->b...", weights, means)  # sum_k w~_k E[x | z_k]
        return torch.where(mask, x, imputed)
    picks = torch.multinomial(weights.T, n, replacement=True).T  # k_l per draw and image   (n, B)
    chosen = z[picks, torch.arange(b, device=x.device)]  # z_{k_l}   (n, B, D)
    draws = model.decode(chosen.reshape(n * b, -1)).sample().view(n, b, *x.shape[1:])  # x ~ p(x | z_{k_l})
    return torch.where(mask, x, draws)
