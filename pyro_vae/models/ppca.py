"""Probabilistic PCA, a linear-Gaussian model whose log p(x) and posterior are known exactly.

    z ~ N(0, I_D),   x | z ~ N(W z + b, sigma^2 I_P)                    (Tipping & Bishop 1999)
    x ~ N(b, W W^T + sigma^2 I_P)
    z | x ~ N(M^{-1} W^T (x - b), sigma^2 M^{-1}),   M = W^T W + sigma^2 I_D

It is the known answer against which the importance-weighted estimator is tested: with the
exact posterior as the guide every log-weight equals log p(x), so log p_K(x) = log p(x) for
every K. ``x`` is a batch of vectors (B, P).

Each instance gets its own name (``ppca1``, ``linear_gaussian2``, ...), so two of them in one
process never share entries of Pyro's global param store (used when ``module_local_params`` is
off, as with SVI).
"""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

_instance_numbers = itertools.count(1)


class PPCA(PyroModule):
    """The PPCA model ``model(x, y=None)``; ``y`` is accepted for the common interface and ignored."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, sigma: float, name: str | None = None):
        super().__init__(name or f"ppca{next(_instance_numbers)}")
        if weight.dim() != 2 or bias.shape != weight.shape[:1]:
            raise ValueError(f"need weight (P, D) and bias (P,), got {tuple(weight.shape)} and {tuple(bias.shape)}")
        self.weight = torch.nn.Parameter(weight.clone())  # W  (P, D)
        self.bias = torch.nn.Parameter(bias.clone())  # b  (P,)
        self.sigma = PyroParam(torch.as_tensor(float(sigma), dtype=weight.dtype), constraint=constraints.positive)

    @classmethod
    def random(
        cls,
        data_dim: int,
        latent_dim: int,
        *,
        sigma: float = 0.5,
        zero_columns: tuple[int, ...] = (),
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> PPCA:
        """W with N(0, 1) entries (the columns in ``zero_columns`` set to 0), b ~ N(0, 1)."""
        g = torch.Generator().manual_seed(seed)
        weight = torch.randn(data_dim, latent_dim, generator=g, dtype=dtype)
        weight[:, list(zero_columns)] = 0.0
        bias = torch.randn(data_dim, generator=g, dtype=dtype)
        return cls(weight, bias, sigma)

    @property
    def data_dim(self) -> int:
        return self.weight.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z ~ N(0, I_D); x ~ N(W z + b, sigma^2 I_P), in the data plate."""
        w, b, sigma = self.weight, self.bias, self.sigma
        with pyro.plate("data", x.shape[0], dim=-1):
            prior = dist.Normal(w.new_zeros(self.latent_dim), w.new_ones(self.latent_dim))
            z = pyro.sample("z", prior.to_event(1))  # (B, D)
            loc = z @ w.T + b  # W z + b  (B, P)
            pyro.sample("x", dist.Normal(loc, sigma).to_event(1), obs=x)
        return z

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) = log N(x; b, W W^T + sigma^2 I) per row, shape (B,)."""
        w, b, sigma = self.weight, self.bias, self.sigma
        cov = w @ w.T + sigma**2 * torch.eye(self.data_dim, dtype=w.dtype)  # (P, P)
        return dist.MultivariateNormal(b, covariance_matrix=cov).log_prob(x)  # (B,)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact p(z|x): mean M^{-1} W^T (x - b) (B, D) and covariance sigma^2 M^{-1} (D, D)."""
        w, b, sigma = self.weight, self.bias, self.sigma
        m = w.T @ w + sigma**2 * torch.eye(self.latent_dim, dtype=w.dtype)  # M  (D, D)
        loc = torch.linalg.solve(m, w.T @ (x - b).T).T  # (B, D)
        cov = sigma**2 * torch.linalg.inv(m)  # (D, D)
        return loc, cov

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n data points by ancestral sampling: x = W z + b + sigma eps, shape (n, P)."""
        w = self.weight.detach()
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=w.dtype)  # (n, D)
        eps = torch.randn(n, self.data_dim, generator=generator, dtype=w.dtype)  # (n, P)
        return z @ w.T + self.bias.detach() + self.sigma.detach() * eps


class PPCAExactPosterior(PyroModule):
    """The guide q(z|x) = p(z|x) of a :class:`PPCA` (exact when ``std_scale`` = 1).

    ``std_scale`` multiplies the posterior's standard deviations (not exact otherwise: a
    slightly too wide guide, for tests of the diagnostics). The model is referenced, not owned:
    this guide has no parameters of its own.
    """

    def __init__(self, ppca: PPCA, std_scale: float = 1.0):
        super().__init__()
        object.__setattr__(self, "_ppca", ppca)  # not a submodule: no shared parameters
        self.std_scale = float(std_scale)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z ~ N(M^{-1} W^T (x - b), std_scale^2 sigma^2 M^{-1}), in the data plate."""
        loc, cov = self._ppca.posterior(x)  # (B, D), (D, D)
        scale_tril = self.std_scale * torch.linalg.cholesky(cov)  # (D, D)
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=scale_tril))


class AmortizedLinearGaussian(PyroModule):
    """An amortized diagonal Gaussian guide with a linear encoder: q(z|x) = N(A x + c, diag(s^2))."""

    def __init__(self, data_dim: int, latent_dim: int, dtype: torch.dtype = torch.float64, name: str | None = None):
        super().__init__(name or f"linear_gaussian{next(_instance_numbers)}")
        self.weight = torch.nn.Parameter(torch.zeros(latent_dim, data_dim, dtype=dtype))  # A
        self.bias = torch.nn.Parameter(torch.zeros(latent_dim, dtype=dtype))  # c
        self.scale = PyroParam(torch.ones(latent_dim, dtype=dtype), constraint=constraints.positive)

    @classmethod
    def mean_field(cls, ppca: PPCA) -> AmortizedLinearGaussian:
        """The best diagonal Gaussian for ``ppca`` in KL(q || p(z|x)): exact mean, and
        variances sigma^2 / M_dd (the inverse of the posterior precision's diagonal)."""
        guide = cls(ppca.data_dim, ppca.latent_dim, dtype=ppca.weight.dtype)
        with torch.no_grad():
            w, b, sigma = ppca.weight, ppca.bias, float(ppca.sigma)
            m = w.T @ w + sigma**2 * torch.eye(ppca.latent_dim, dtype=w.dtype)  # (D, D)
            a = torch.linalg.solve(m, w.T)  # M^{-1} W^T  (D, P)
            guide.weight.copy_(a)
            guide.bias.copy_(-(a @ b))
            guide.scale = sigma / m.diagonal().sqrt()
        return guide

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z ~ N(A x + c, diag(s^2)), in the data plate."""
        loc = x @ self.weight.T + self.bias  # (B, D)
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("z", dist.Normal(loc, self.scale).to_event(1))


__all__ = ["PPCA", "PPCAExactPosterior", "AmortizedLinearGaussian"]
