"""The PPCA test model: its closed forms agree with its own Pyro program.

Everything is float64, so "exact" identities are checked to 1e-10 (roundoff of a few small
matrix solves and Cholesky factors is ~1e-14; 1e-10 leaves room without hiding a real error,
which would be O(1e-2) or more).
"""

import math

import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions.util import scale_and_mask

from pyro_vae.models.ppca import PPCA, AmortizedLinearGaussian, PPCAExactPosterior

TOL = 1e-10


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def _log_probs(trace):
    """{site name: log_prob per data point (B,)} for the sample sites of a trace."""
    return {
        name: scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and name != "data"
    }


@pytest.fixture
def x(ppca):
    return ppca.sample(8, torch.Generator().manual_seed(0))


def test_sites_follow_the_interface(ppca, x):
    """z has event dim 1 and x is observed; both sit in the data plate (one log_prob per row)."""
    guide_trace = poutine.trace(PPCAExactPosterior(ppca)).get_trace(x)
    model_trace = poutine.trace(poutine.replay(ppca, trace=guide_trace)).get_trace(x)
    for trace in (guide_trace, model_trace):
        z = trace.nodes["z"]
        assert z["fn"].event_shape == (3,) and z["value"].shape == (8, 3)
        assert [f.name for f in z["cond_indep_stack"]] == ["data"]
    assert model_trace.nodes["x"]["is_observed"]
    assert all(lp.shape == (8,) for lp in _log_probs(model_trace).values())


def test_bayes_identity_log_px_equals_joint_minus_posterior(ppca, x):
    """log p(x) = log p(x, z) - log p(z | x) for any z: ties log_marginal, posterior and model."""
    guide = PPCAExactPosterior(ppca, std_scale=2.0)  # any z will do; a wide guide spreads them
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(ppca, trace=guide_trace)).get_trace(x)
    log_joint = sum(_log_probs(model_trace).values())  # (B,)
    loc, cov = ppca.posterior(x)
    z = guide_trace.nodes["z"]["value"]
    log_post = torch.distributions.MultivariateNormal(loc, cov).log_prob(z)  # (B,)
    assert torch.allclose(log_joint - log_post, ppca.log_marginal(x), atol=TOL, rtol=0)


def test_log_marginal_is_the_gaussian_with_ppca_covariance(ppca):
    """For 1-d data and 1-d latents log p(x) is N(x; b, w^2 + sigma^2): checked by hand values."""
    model = PPCA(torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64), sigma=0.5)
    x = torch.tensor([[0.0], [3.0]], dtype=torch.float64)
    var = 2.0**2 + 0.5**2
    expected = torch.tensor(
        [-0.5 * math.log(2 * math.pi * var) - 0.5 * (v - 1.0) ** 2 / var for v in (0.0, 3.0)], dtype=torch.float64
    )
    assert torch.allclose(model.log_marginal(x), expected, atol=TOL, rtol=0)


def test_sample_has_the_model_covariance(ppca):
    """Empirical covariance of 40,000 draws matches W W^T + sigma^2 I.

    Entries of the covariance are O(1-5); their Monte-Carlo standard error at n = 40,000 is
    about |Sigma| * sqrt(2 / n) < 0.04; a tolerance of 0.2 is > 5 standard errors.
    """
    data = ppca.sample(40_000, torch.Generator().manual_seed(1))
    w = ppca.weight.detach()
    expected = w @ w.T + 0.25 * torch.eye(6, dtype=torch.float64)
    assert torch.allclose(torch.cov(data.T), expected, atol=0.2, rtol=0)
    assert torch.allclose(data.mean(0), ppca.bias.detach(), atol=0.1, rtol=0)


def test_mean_field_guide_is_the_kl_optimal_diagonal_gaussian(ppca, x):
    """Same mean as the exact posterior; variances 1 / diag(posterior precision)."""
    guide = AmortizedLinearGaussian.mean_field(ppca)
    loc, cov = ppca.posterior(x)
    trace = poutine.trace(guide).get_trace(x)
    q = trace.nodes["z"]["fn"]
    assert torch.allclose(q.mean, loc, atol=TOL, rtol=0)
    precision = torch.linalg.inv(cov)
    assert torch.allclose(q.variance[0], 1 / precision.diagonal(), atol=TOL, rtol=0)


def test_zero_columns_give_constant_posterior_means(ppca):
    """With column d of W zero, x says nothing about z_d: its posterior mean is 0 for every x."""
    model = PPCA.random(8, 5, zero_columns=(1, 3), seed=2)
    loc, _ = model.posterior(model.sample(50, torch.Generator().manual_seed(3)))
    assert loc[:, [1, 3]].abs().max() < TOL
    assert loc[:, [0, 2, 4]].var(0).min() > 0.1
