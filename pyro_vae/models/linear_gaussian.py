"""Two linear-Gaussian models with more than one latent site, whose log p(x) is known exactly.

Two stochastic layers (the shape of Burda et al.'s two-layer IWAE, made linear)::

    z2 ~ N(0, I),   z1 | z2 ~ N(A z2 + a, diag(d^2)),   x | z1 ~ N(W z1 + b, sigma^2 I)
    x ~ N(W a + b, W (A A^T + diag(d^2)) W^T + sigma^2 I)

A Gaussian mixture in latent space, the cluster c summed out by enumeration::

    c ~ Categorical(pi),   z | c ~ N(mu_c, diag(tau_c^2)),   x | z ~ N(W z + b, sigma^2 I)
    p(x) = sum_c pi_c N(x; W mu_c + b, W diag(tau_c^2) W^T + sigma^2 I)

Both have exact posteriors, written here as guides: with q = p(latents | x) every importance
weight equals p(x), so the estimator's log p_K(x) is exact at every K. They are the known answers
against which the evaluation of models with several latent sites is tested, as
:mod:`pyro_vae.models.ppca` is for one. ``x`` is a batch of vectors (B, P); every site sits in
``pyro.plate("data", B, dim=-1)``.
"""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

_instance_numbers = itertools.count(1)


# ----------------------------------------------------------------------------------------------
# Two stochastic layers


class TwoLayerLinearGaussian(PyroModule):
    """p(z2) p(z1 | z2) p(x | z1), linear and Gaussian; ``model(x, y=None)``, ``y`` ignored."""

    def __init__(
        self,
        coupling: torch.Tensor,
        offset: torch.Tensor,
        z1_std: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        sigma: float,
        name: str | None = None,
    ):
        super().__init__(name or f"two_layer_linear_gaussian{next(_instance_numbers)}")
        d1, d2 = coupling.shape
        if (
            offset.shape != (d1,)
            or z1_std.shape != (d1,)
            or weight.shape[1:] != (d1,)
            or bias.shape != weight.shape[:1]
        ):
            raise ValueError(
                f"need A (D1, D2), a (D1,), d (D1,), W (P, D1), b (P,); got "
                f"{tuple(coupling.shape)}, {tuple(offset.shape)}, {tuple(z1_std.shape)}, "
                f"{tuple(weight.shape)}, {tuple(bias.shape)}"
            )
        self.coupling = torch.nn.Parameter(coupling.clone())  # A  (D1, D2)
        self.offset = torch.nn.Parameter(offset.clone())  # a  (D1,)
        self.z1_std = PyroParam(z1_std.clone(), constraint=constraints.positive)  # d  (D1,)
        self.weight = torch.nn.Parameter(weight.clone())  # W  (P, D1)
        self.bias = torch.nn.Parameter(bias.clone())  # b  (P,)
        self.sigma = PyroParam(torch.as_tensor(float(sigma), dtype=weight.dtype), constraint=constraints.positive)

    @classmethod
    def random(
        cls,
        data_dim: int,
        z1_dim: int,
        z2_dim: int,
        *,
        sigma: float = 0.5,
        z1_std: float = 0.5,
        coupling_scale: float = 1.0,
        zero_columns: tuple[int, ...] = (),
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> TwoLayerLinearGaussian:
        """A = coupling_scale * N(0, 1) entries (0: z2 is independent of everything, a dead
        layer), a, W, b with N(0, 1) entries, the columns ``zero_columns`` of W set to 0."""
        g = torch.Generator().manual_seed(seed)
        coupling = coupling_scale * torch.randn(z1_dim, z2_dim, generator=g, dtype=dtype)
        offset = torch.randn(z1_dim, generator=g, dtype=dtype)
        weight = torch.randn(data_dim, z1_dim, generator=g, dtype=dtype)
        weight[:, list(zero_columns)] = 0.0
        bias = torch.randn(data_dim, generator=g, dtype=dtype)
        return cls(coupling, offset, torch.full((z1_dim,), z1_std, dtype=dtype), weight, bias, sigma)

    @property
    def dims(self) -> tuple[int, int, int]:
        """(P, D1, D2): data, first and second latent layer sizes."""
        return self.weight.shape[0], self.coupling.shape[0], self.coupling.shape[1]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z2 ~ N(0, I); z1 ~ N(A z2 + a, diag(d^2)); x ~ N(W z1 + b, sigma^2 I), in the data plate."""
        a_mat, w = self.coupling, self.weight
        with pyro.plate("data", x.shape[0], dim=-1):
            top = dist.Normal(a_mat.new_zeros(a_mat.shape[1]), 1.0)
            z2 = pyro.sample("z2", top.to_event(1))  # (B, D2)
            z1 = pyro.sample("z1", dist.Normal(z2 @ a_mat.T + self.offset, self.z1_std).to_event(1))  # (B, D1)
            pyro.sample("x", dist.Normal(z1 @ w.T + self.bias, self.sigma).to_event(1), obs=x)
        return z1

    def _latent_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior of u = [z1; z2]: mean [a; 0] (D1 + D2,) and covariance
        [[A A^T + diag(d^2), A], [A^T, I]]."""
        a_mat = self.coupling
        _, d1, d2 = self.dims
        cov11 = a_mat @ a_mat.T + torch.diag(self.z1_std**2)
        cov = torch.cat([torch.cat([cov11, a_mat], 1), torch.cat([a_mat.T, torch.eye(d2, dtype=a_mat.dtype)], 1)], 0)
        return torch.cat([self.offset, a_mat.new_zeros(d2)]), cov

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) = log N(x; W a + b, W (A A^T + diag(d^2)) W^T + sigma^2 I) per row (B,)."""
        w, a_mat = self.weight, self.coupling
        p = self.dims[0]
        cov_z1 = a_mat @ a_mat.T + torch.diag(self.z1_std**2)  # (D1, D1)
        cov = w @ cov_z1 @ w.T + self.sigma**2 * torch.eye(p, dtype=w.dtype)  # (P, P)
        return dist.MultivariateNormal(w @ self.offset + self.bias, covariance_matrix=cov).log_prob(x)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact p(z1, z2 | x) of u = [z1; z2]: mean (B, D1 + D2) and covariance (D1 + D2, D1 + D2).

        x = H u + b + noise with H = [W, 0]; precision C^{-1} + H^T H / sigma^2, mean
        S (C^{-1} m + H^T (x - b) / sigma^2) with S the covariance, m and C the prior's."""
        mean, cov = self._latent_prior()
        d2 = self.dims[2]
        h = torch.cat([self.weight, self.weight.new_zeros(self.weight.shape[0], d2)], 1)  # (P, D1 + D2)
        prior_precision = torch.linalg.inv(cov)
        post_cov = torch.linalg.inv(prior_precision + h.T @ h / self.sigma**2)
        post_cov = (post_cov + post_cov.T) / 2  # symmetric to roundoff, for the Cholesky factors
        rhs = prior_precision @ mean + ((x - self.bias) @ h / self.sigma**2)  # (B, D1 + D2)
        return rhs @ post_cov.T, post_cov

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n data points by ancestral sampling, shape (n, P)."""
        p, d1, d2 = self.dims
        dtype = self.weight.dtype
        with torch.no_grad():
            z2 = torch.randn(n, d2, generator=generator, dtype=dtype)
            z1 = z2 @ self.coupling.T + self.offset + self.z1_std * torch.randn(n, d1, generator=generator, dtype=dtype)
            return z1 @ self.weight.T + self.bias + self.sigma * torch.randn(n, p, generator=generator, dtype=dtype)


class TwoLayerPosterior(PyroModule):
    """The guide q(z1, z2 | x) = p(z1, z2 | x) of a :class:`TwoLayerLinearGaussian`, factored in
    either order (exact when ``std_scale`` = 1 and not ``mean_field``):

    * ``order="z2_first"``, the model's: q(z2 | x) q(z1 | z2, x);
    * ``order="z1_first"``, the encoder's: q(z1 | x) q(z2 | z1, x).

    Each factor is a Gaussian conditional of the joint posterior N(mu, S):
    q(u_a | x) = N(mu_a, S_aa), q(u_b | u_a, x) = N(mu_b + S_ba S_aa^{-1} (u_a - mu_a),
    S_bb - S_ba S_aa^{-1} S_ab). ``std_scale`` multiplies every factor's Cholesky factor (too
    wide: a cruder guide); ``mean_field`` keeps only the marginal variances of each layer and no
    dependence between them. The model is referenced, not owned: no parameters of its own.
    """

    def __init__(
        self, model: TwoLayerLinearGaussian, order: str = "z2_first", std_scale: float = 1.0, mean_field: bool = False
    ):
        super().__init__()
        if order not in ("z1_first", "z2_first"):
            raise ValueError(f"order must be 'z1_first' or 'z2_first', got {order!r}")
        object.__setattr__(self, "_model", model)  # not a submodule: no shared parameters
        self.order, self.std_scale, self.mean_field = order, float(std_scale), bool(mean_field)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        mean, cov = self._model.posterior(x)  # (B, D1 + D2), (D1 + D2, D1 + D2)
        d1 = self._model.dims[1]
        blocks = {"z1": slice(0, d1), "z2": slice(d1, None)}
        first, second = ("z2", "z1") if self.order == "z2_first" else ("z1", "z2")
        a, b = blocks[first], blocks[second]
        values = {}
        with pyro.plate("data", x.shape[0], dim=-1):
            if self.mean_field:
                for name in (first, second):
                    std = self.std_scale * cov[blocks[name], blocks[name]].diagonal().sqrt()
                    values[name] = pyro.sample(name, dist.Normal(mean[:, blocks[name]], std).to_event(1))
                return values
            cov_aa, cov_ab, cov_bb = cov[a, a], cov[a, b], cov[b, b]
            values[first] = pyro.sample(
                first, dist.MultivariateNormal(mean[:, a], scale_tril=self.std_scale * torch.linalg.cholesky(cov_aa))
            )
            gain = torch.linalg.solve(cov_aa, cov_ab).T  # S_ba S_aa^{-1}   (D_b, D_a)
            loc = mean[:, b] + (values[first] - mean[:, a]) @ gain.T  # (B, D_b)
            cond_cov = cov_bb - gain @ cov_ab
            cond_cov = (cond_cov + cond_cov.T) / 2
            values[second] = pyro.sample(
                second, dist.MultivariateNormal(loc, scale_tril=self.std_scale * torch.linalg.cholesky(cond_cov))
            )
        return values


# ----------------------------------------------------------------------------------------------
# A Gaussian mixture in latent space, the cluster enumerated


class MixtureLinearGaussian(PyroModule):
    """p(c) p(z | c) p(x | z) with c ~ Categorical(pi) summed out by enumeration in the model
    (``infer={"enumerate": "parallel"}``); ``model(x, y=None)``, ``y`` ignored."""

    def __init__(
        self,
        probs: torch.Tensor,
        means: torch.Tensor,
        stds: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        sigma: float,
        name: str | None = None,
    ):
        super().__init__(name or f"mixture_linear_gaussian{next(_instance_numbers)}")
        c, d = means.shape
        if probs.shape != (c,) or stds.shape != (c, d) or weight.shape[1:] != (d,) or bias.shape != weight.shape[:1]:
            raise ValueError(
                f"need pi (C,), mu (C, D), tau (C, D), W (P, D), b (P,); got "
                f"{tuple(probs.shape)}, {tuple(means.shape)}, {tuple(stds.shape)}, "
                f"{tuple(weight.shape)}, {tuple(bias.shape)}"
            )
        self.probs = PyroParam(probs.clone(), constraint=constraints.simplex)  # pi  (C,)
        self.means = torch.nn.Parameter(means.clone())  # mu  (C, D)
        self.stds = PyroParam(stds.clone(), constraint=constraints.positive)  # tau  (C, D)
        self.weight = torch.nn.Parameter(weight.clone())  # W  (P, D)
        self.bias = torch.nn.Parameter(bias.clone())  # b  (P,)
        self.sigma = PyroParam(torch.as_tensor(float(sigma), dtype=weight.dtype), constraint=constraints.positive)

    @classmethod
    def random(
        cls,
        data_dim: int,
        latent_dim: int,
        clusters: int,
        *,
        sigma: float = 0.5,
        spread: float = 2.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> MixtureLinearGaussian:
        """Cluster means spread * N(0, 1), standard deviations in [0.3, 0.8], uneven weights."""
        g = torch.Generator().manual_seed(seed)
        probs = torch.softmax(torch.randn(clusters, generator=g, dtype=dtype), 0)
        means = spread * torch.randn(clusters, latent_dim, generator=g, dtype=dtype)
        stds = 0.3 + 0.5 * torch.rand(clusters, latent_dim, generator=g, dtype=dtype)
        weight = torch.randn(data_dim, latent_dim, generator=g, dtype=dtype)
        bias = torch.randn(data_dim, generator=g, dtype=dtype)
        return cls(probs, means, stds, weight, bias, sigma)

    @property
    def dims(self) -> tuple[int, int, int]:
        """(P, D, C): data size, latent size, number of clusters."""
        return self.weight.shape[0], self.means.shape[1], self.means.shape[0]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """c ~ Categorical(pi) (enumerated); z ~ N(mu_c, diag(tau_c^2)); x ~ N(W z + b, sigma^2 I)."""
        with pyro.plate("data", x.shape[0], dim=-1):
            c = pyro.sample("c", dist.Categorical(self.probs), infer={"enumerate": "parallel"})  # (B,) or (C, 1)
            z = pyro.sample("z", dist.Normal(self.means[c], self.stds[c]).to_event(1))  # (B, D)
            pyro.sample("x", dist.Normal(z @ self.weight.T + self.bias, self.sigma).to_event(1), obs=x)
        return z

    def cluster_marginals(self) -> dist.MultivariateNormal:
        """p(x | c) = N(W mu_c + b, W diag(tau_c^2) W^T + sigma^2 I), batch shape (C,)."""
        w = self.weight
        cov = (w * self.stds[:, None, :] ** 2) @ w.T + self.sigma**2 * torch.eye(self.dims[0], dtype=w.dtype)
        return dist.MultivariateNormal(self.means @ w.T + self.bias, covariance_matrix=cov)  # (C,) x (P,)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) = log sum_c pi_c p(x | c) per row, shape (B,)."""
        log_px_c = self.cluster_marginals().log_prob(x[:, None, :])  # (B, C)
        return torch.logsumexp(self.probs.log() + log_px_c, -1)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact p(c, z | x) = p(c | x) N(z; m_c(x), S_c): p(c | x) (B, C), m (B, C, D), S (C, D, D),
        with S_c = (diag(tau_c^-2) + W^T W / sigma^2)^{-1}, m_c = S_c (mu_c / tau_c^2 + W^T (x - b) / sigma^2)."""
        w, s2 = self.weight, self.sigma**2
        log_joint = self.probs.log() + self.cluster_marginals().log_prob(x[:, None, :])  # (B, C)
        cluster_probs = torch.softmax(log_joint, -1)
        cov = torch.linalg.inv(torch.diag_embed(self.stds**-2) + w.T @ w / s2)  # (C, D, D)
        cov = (cov + cov.transpose(-1, -2)) / 2
        rhs = (self.means / self.stds**2)[None] + ((x - self.bias) @ w / s2)[:, None, :]  # (B, C, D)
        means = (cov[None] @ rhs[..., None]).squeeze(-1)  # (B, C, D)
        return cluster_probs, means, cov

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n data points by ancestral sampling, shape (n, P)."""
        p, d, _ = self.dims
        dtype = self.weight.dtype
        with torch.no_grad():
            c = torch.multinomial(self.probs, n, replacement=True, generator=generator)  # (n,)
            z = self.means[c] + self.stds[c] * torch.randn(n, d, generator=generator, dtype=dtype)
            return z @ self.weight.T + self.bias + self.sigma * torch.randn(n, p, generator=generator, dtype=dtype)


class MixturePosterior(PyroModule):
    """The guide q(z | x) = p(z | x) = sum_c p(c | x) N(z; m_c(x), S_c) of a
    :class:`MixtureLinearGaussian` (c is not sampled: the model sums it out). A mixture has no
    ``rsample``: evaluation draws it with ``sample()``. With ``moment_matched`` it is the one
    Gaussian with the posterior's mean and covariance, its Cholesky factor times ``std_scale``:
    a cruder guide."""

    def __init__(self, model: MixtureLinearGaussian, moment_matched: bool = False, std_scale: float = 1.0):
        super().__init__()
        object.__setattr__(self, "_model", model)  # not a submodule: no shared parameters
        self.moment_matched, self.std_scale = bool(moment_matched), float(std_scale)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        cluster_probs, means, cov = self._model.posterior(x)  # (B, C), (B, C, D), (C, D, D)
        with pyro.plate("data", x.shape[0], dim=-1):
            if not self.moment_matched:
                components = dist.MultivariateNormal(means, scale_tril=torch.linalg.cholesky(cov))  # (B, C)
                return pyro.sample("z", dist.MixtureSameFamily(dist.Categorical(cluster_probs), components))
            mean = (cluster_probs[..., None] * means).sum(1)  # (B, D)
            spread = means - mean[:, None, :]  # (B, C, D)
            # Cov = sum_c p(c|x) (S_c + (m_c - m)(m_c - m)^T)   (B, D, D)
            total = (cluster_probs[..., None, None] * (cov[None] + spread[..., :, None] * spread[..., None, :])).sum(1)
            scale_tril = self.std_scale * torch.linalg.cholesky(total)
            return pyro.sample("z", dist.MultivariateNormal(mean, scale_tril=scale_tril))


__all__ = ["MixtureLinearGaussian", "MixturePosterior", "TwoLayerLinearGaussian", "TwoLayerPosterior"]
