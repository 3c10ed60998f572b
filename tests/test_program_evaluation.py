"""Evaluation of Pyro programs with several latent sites, proved on linear-Gaussian models whose
log p(x) is known exactly: two stochastic layers p(z2) p(z1|z2) p(x|z1), and a Gaussian mixture
in latent space whose cluster c the model sums out by enumeration.

Tolerances, and why:

* EXACT = 1e-10: float64 identities (exact-posterior guides, where every log-weight is log p(x);
  chunking; enumeration against a hand-written sum). Differences are roundoff of a few small
  solves and Cholesky factors, ~1e-14; a real error is O(1e-2) or more.
* Monte-Carlo checks use the estimator's own standard deviation (delta method:
  Var[log p_K(x)] ~= 1/ESS - 1/K per image) or the standard error of a mean over draws, and
  allow 5 of them.
"""

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.nn import PyroModule

from pyro_vae.errors import PyroVAEError
from pyro_vae.evaluation import evaluate_log_px, importance_weighted_log_px, log_px_against_k, model_log_joint
from pyro_vae.models.linear_gaussian import (
    MixtureLinearGaussian,
    MixturePosterior,
    TwoLayerLinearGaussian,
    TwoLayerPosterior,
)
from pyro_vae.models.ppca import PPCA, PPCAExactPosterior
from pyro_vae.objectives import elbo_terms

EXACT = 1e-10

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture
def two_layer():
    """6-D data, z1 3-D, z2 2-D, float64."""
    return TwoLayerLinearGaussian.random(6, 3, 2, sigma=0.5, seed=1)


@pytest.fixture
def mixture():
    """6-D data, 2-D z, 3 well-separated clusters, float64."""
    return MixtureLinearGaussian.random(6, 2, 3, sigma=0.5, seed=2)


def _log_prob(site):
    return site["fn"].log_prob(site["value"])


# ----------------------------------------------------------------------------------------------
# The test models' closed forms agree with their own Pyro programs


def test_two_layer_bayes_identity(two_layer):
    """log p(x) = log p(x, z1, z2) - log p(z1, z2 | x) at any z: ties log_marginal and posterior
    to the model program."""
    x = two_layer.sample(8, torch.Generator().manual_seed(0))
    guide = TwoLayerPosterior(two_layer, std_scale=2.0)  # any z will do; a wide guide spreads them
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(two_layer, trace=guide_trace)).get_trace(x)
    log_joint = sum(_log_prob(model_trace.nodes[n]) for n in ("z2", "z1", "x"))  # (B,)
    mean, cov = two_layer.posterior(x)
    u = torch.cat([guide_trace.nodes["z1"]["value"], guide_trace.nodes["z2"]["value"]], -1)
    log_post = dist.MultivariateNormal(mean, cov).log_prob(u)
    assert torch.allclose(log_joint - log_post, two_layer.log_marginal(x), atol=EXACT, rtol=0)


def test_mixture_bayes_identity(mixture):
    """log p(x) = log p(x, z, c) - log p(z, c | x) at any (z, c), c enumerated by hand."""
    x = mixture.sample(8, torch.Generator().manual_seed(0))
    z = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cluster_probs, means, cov = mixture.posterior(x)
    for c in range(3):
        log_joint = (
            mixture.probs[c].log()
            + dist.Normal(mixture.means[c], mixture.stds[c]).log_prob(z).sum(-1)
            + dist.Normal(z @ mixture.weight.T + mixture.bias, mixture.sigma).log_prob(x).sum(-1)
        )
        log_post = cluster_probs[:, c].log() + dist.MultivariateNormal(means[:, c], cov[c]).log_prob(z)
        assert torch.allclose(log_joint - log_post, mixture.log_marginal(x), atol=EXACT, rtol=0)


# ----------------------------------------------------------------------------------------------
# Two stochastic layers


@pytest.mark.parametrize("order", ["z1_first", "z2_first"])
@pytest.mark.parametrize("k,k_chunk", [(1, None), (50, None), (50, 7)])
def test_two_layer_exact_posterior_gives_exact_log_px_at_every_k(two_layer, order, k, k_chunk):
    """q(z1, z2 | x) = p(z1, z2 | x), in either factorisation: every weight is p(x), so
    log p_K(x) = ELBO = log p(x) and ESS = K, to float precision."""
    x = two_layer.sample(10, torch.Generator().manual_seed(0))
    exact = two_layer.log_marginal(x).detach()
    est = importance_weighted_log_px(two_layer, TwoLayerPosterior(two_layer, order), x, k=k, k_chunk=k_chunk)
    assert torch.allclose(est.log_px, exact, atol=EXACT, rtol=0)
    assert torch.allclose(est.elbo, exact, atol=EXACT, rtol=0)
    assert torch.allclose(est.ess, torch.full_like(est.ess, k), atol=0, rtol=EXACT)


def test_two_layer_crude_guide_approaches_log_px_as_k_grows(two_layer):
    """The exact conditionals widened by 30%: the ELBO (the mean of log p_1(x)) is below log p(x)
    for every image, by about KL(q || p(z|x)) ~ 0.4 nats; the curve over K rises; at K = 1000
    every image is within 5 estimator standard deviations of log p(x)."""
    x = two_layer.sample(40, torch.Generator().manual_seed(4))
    exact = two_layer.log_marginal(x).detach().numpy()
    guide = TwoLayerPosterior(two_layer, "z1_first", std_scale=1.3)
    curve = log_px_against_k(two_layer, guide, x, ks=(1, 10, 100, 1000), batch_size=20, seed=1)
    err = curve.log_px - exact[:, None]  # (N, 4)
    assert np.all(np.diff(err.mean(0)) > -0.01)  # non-decreasing in expectation
    est = importance_weighted_log_px(two_layer, guide, x[:20], k=1000, seed=1)  # the curve's first batch
    assert np.allclose(est.log_px.numpy(), curve.log_px[:20, -1], atol=EXACT)
    assert np.all(est.elbo.numpy() - exact[:20] < -0.2)  # E[log p_1(x)] = ELBO < log p(x)
    sd = (1 / est.ess - 1 / 1000).sqrt().numpy()
    assert np.all(np.abs(err[:20, -1]) < 5 * sd)
    assert err[:, 0].mean() < -0.2 and np.abs(err[:, -1]).mean() < 0.2 * np.abs(err[:, 0]).mean()


def test_a_guide_that_misses_a_model_site_is_a_clear_error(two_layer):
    """Only z1 in the guide: the error names z2 and the fix."""

    class OnlyZ1(PyroModule):
        def forward(self, x, y=None):
            with pyro.plate("data", x.shape[0], dim=-1):
                pyro.sample("z1", dist.Normal(x.new_zeros(3), 1.0).to_event(1))

    x = two_layer.sample(4)
    with pytest.raises(
        PyroVAEError,
        match=r"the model samples 'z2' but the guide does not.*give the guide a "
        r"site 'z2' \(a continuous latent cannot be enumerated\)",
    ):
        importance_weighted_log_px(two_layer, OnlyZ1(), x, k=3)
    with pytest.raises(PyroVAEError, match="the model samples 'z2' but the guide does not"):
        elbo_terms(two_layer, OnlyZ1(), x)


def test_a_discrete_site_without_the_enumerate_mark_is_a_clear_error(mixture):
    """The mixture's c without infer={"enumerate": "parallel"}: the error says how to mark it."""

    class Unmarked(PyroModule):
        def forward(self, x, y=None):
            with pyro.plate("data", x.shape[0], dim=-1):
                c = pyro.sample("c", dist.Categorical(mixture.probs))
                z = pyro.sample("z", dist.Normal(mixture.means[c], mixture.stds[c]).to_event(1))
                pyro.sample("x", dist.Normal(z @ mixture.weight.T + mixture.bias, mixture.sigma).to_event(1), obs=x)

    x = mixture.sample(4)
    with pytest.raises(
        PyroVAEError,
        match=r"the model samples 'c' but the guide does not.*infer="
        r"\{'enumerate': 'parallel'\}",
    ):
        importance_weighted_log_px(Unmarked(), MixturePosterior(mixture), x, k=3)


# ----------------------------------------------------------------------------------------------
# A Gaussian mixture in latent space, c enumerated in the model


def test_enumeration_sums_the_cluster_exactly(mixture):
    """model_log_joint at given z equals log sum_c pi_c N(z; mu_c, tau_c) + log N(x; W z + b, sigma^2)."""
    x = mixture.sample(9, torch.Generator().manual_seed(0))
    z = 2 * torch.randn(9, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_prior = torch.logsumexp(
        mixture.probs.log() + dist.Normal(mixture.means, mixture.stds).log_prob(z[:, None, :]).sum(-1), -1
    )  # (B,)
    log_lik = dist.Normal(z @ mixture.weight.T + mixture.bias, mixture.sigma).log_prob(x).sum(-1)
    assert torch.allclose(model_log_joint(mixture, x, None, {"z": z}), log_prior + log_lik, atol=EXACT, rtol=0)


@pytest.mark.parametrize("k,k_chunk", [(1, None), (50, None), (50, 7)])
def test_mixture_exact_posterior_gives_exact_log_px_at_every_k(mixture, k, k_chunk):
    """q(z|x) = p(z|x) (itself a mixture) with c summed out in the model: log p_K(x) = log p(x)."""
    x = mixture.sample(10, torch.Generator().manual_seed(0))
    exact = mixture.log_marginal(x).detach()
    est = importance_weighted_log_px(mixture, MixturePosterior(mixture), x, k=k, k_chunk=k_chunk)
    assert torch.allclose(est.log_px, exact, atol=EXACT, rtol=0)
    assert torch.allclose(est.elbo, exact, atol=EXACT, rtol=0)


def test_mixture_crude_guide_converges(mixture):
    """One Gaussian with the mixture posterior's moments, widened by 30%: the ELBO (the mean of
    log p_1(x)) is below log p(x) for every image; at K = 2000 every image is within 5
    estimator standard deviations of log p(x)."""
    x = mixture.sample(30, torch.Generator().manual_seed(3))
    exact = mixture.log_marginal(x).detach()
    guide = MixturePosterior(mixture, moment_matched=True, std_scale=1.3)
    est = importance_weighted_log_px(mixture, guide, x, k=2000, seed=2)
    assert (est.elbo - exact < -0.05).all()
    err = est.log_px - exact
    sd = (1 / est.ess - 1 / 2000).sqrt()
    assert (err.abs() < 5 * sd).all()
    assert err.abs().mean() < 0.2 * (est.elbo - exact).abs().mean()


# ----------------------------------------------------------------------------------------------
# Chunks and processes change nothing


def _models_and_guides():
    two_layer = TwoLayerLinearGaussian.random(6, 3, 2, sigma=0.5, seed=1)
    mixture = MixtureLinearGaussian.random(6, 2, 3, sigma=0.5, seed=2)
    return {
        "two_layer": (two_layer, TwoLayerPosterior(two_layer, "z1_first", std_scale=1.4)),
        "mixture": (mixture, MixturePosterior(mixture, moment_matched=True, std_scale=1.3)),
    }


@pytest.mark.parametrize("name", ["two_layer", "mixture"])
def test_chunking_does_not_change_the_numbers(name):
    """k = 13 in chunks of 1, 5 and 13 particles: the same weights and per-site means."""
    model, guide = _models_and_guides()[name]
    x = model.sample(7, torch.Generator().manual_seed(0))
    runs = [
        importance_weighted_log_px(model, guide, x, k=13, k_chunk=c, seed=5, return_log_weights=True)
        for c in (1, 5, 13)
    ]
    for est in runs[1:]:
        assert torch.allclose(est.log_weights, runs[0].log_weights, atol=EXACT, rtol=0)
        assert torch.allclose(est.log_px, runs[0].log_px, atol=EXACT, rtol=0)
        assert torch.allclose(est.elbo, runs[0].elbo, atol=EXACT, rtol=0)
        assert est.site_means.keys() == runs[0].site_means.keys()
        for site, mean in est.site_means.items():
            assert (mean is None) == (runs[0].site_means[site] is None)
            if mean is not None:
                assert torch.allclose(mean, runs[0].site_means[site], atol=EXACT, rtol=0)


@pytest.mark.parametrize("name", ["two_layer", "mixture"])
def test_two_processes_give_the_numbers_of_one(name):
    """Batches sharded over two processes (simulated: the second's batches gathered into the
    first's result) give the one-process result, per-site means included."""
    model, guide = _models_and_guides()[name]
    x = model.sample(25, torch.Generator().manual_seed(0))
    kwargs = dict(k=9, batch_size=6, seed=3, progress=False, khat=False)
    one = evaluate_log_px(model, guide, x, **kwargs)
    other: list = []
    evaluate_log_px(model, guide, x, shard=(1, 2), gather=lambda part: other.append(part) or [part], **kwargs)
    two = evaluate_log_px(model, guide, x, shard=(0, 2), gather=lambda part: [part, other[0]], **kwargs)
    assert np.array_equal(one.log_px, two.log_px) and np.array_equal(one.elbo, two.elbo)
    assert one.site_means.keys() == two.site_means.keys()
    for site, mean in one.site_means.items():
        assert (mean is None and two.site_means[site] is None) or np.array_equal(mean, two.site_means[site])


# ----------------------------------------------------------------------------------------------
# Per-site posterior means and active units


def test_active_units_per_site_find_a_dead_layer():
    """A = 0: z2 is independent of x (its posterior is the prior: E_q[z2|x] = 0, no active unit);
    W's column 1 is zero: z1's unit 1 never reaches x. Active: z1 3 of 4, z2 0 of 3."""
    model = TwoLayerLinearGaussian.random(8, 4, 3, coupling_scale=0.0, zero_columns=(1,), seed=2)
    images = model.sample(60, torch.Generator().manual_seed(3))
    result = evaluate_log_px(model, TwoLayerPosterior(model, "z2_first"), images, k=5, batch_size=25, progress=False)
    assert result.active_units_per_site() == {"z2": 0, "z1": 3}
    mean, _ = model.posterior(images)  # exact E[z1, z2 | x]   (N, 4 + 3)
    assert np.allclose(result.site_means["z1"], mean[:, :4].detach().numpy(), atol=EXACT)
    assert np.allclose(result.site_means["z2"], mean[:, 4:].detach().numpy(), atol=EXACT)
    s = result.summary()
    assert s["active_units_per_site"] == {"z2": 0, "z1": 3}
    assert s["latent_dim_per_site"] == {"z2": 3, "z1": 4}
    # z2 is drawn first, its mean is the guide's; z1's is the mean of q(z1 | z2, x) over particles
    assert s["mean_source_per_site"] == {"z2": "analytic", "z1": "analytic"}
    assert s["active_units"] is None  # no site named z
    assert "z2 0 / 3, z1 3 / 4" in result.table()
    json.dumps(s, allow_nan=False)


def test_mixture_reports_its_cluster_as_a_discrete_site(mixture):
    """The enumerated c is listed with no active units; z's posterior mean is the mixture's."""
    images = mixture.sample(40, torch.Generator().manual_seed(3))
    result = evaluate_log_px(mixture, MixturePosterior(mixture), images, k=3, batch_size=20, progress=False)
    assert result.active_units_per_site() == {"z": 2, "c": None}
    assert result.summary()["latent_dim_per_site"] == {"z": 2, "c": None}
    assert result.active_units() == 2  # the site named z, as for any model
    cluster_probs, means, _ = mixture.posterior(images)
    expected = (cluster_probs[..., None] * means).sum(1).detach().numpy()
    assert np.allclose(result.site_means["z"], expected, atol=EXACT)
    assert "c n/a (discrete)" in result.table()


def test_a_one_site_model_summary_is_as_before(ppca):
    """One latent site named z: the summary's keys are today's (eval.json unchanged)."""
    images = ppca.sample(20, torch.Generator().manual_seed(0))
    result = evaluate_log_px(ppca, PPCAExactPosterior(ppca), images, k=3, batch_size=10, progress=False)
    assert set(result.site_means) == {"z"} and np.array_equal(result.site_means["z"], result.z_mean)
    assert not any("per_site" in key for key in result.summary())


# ----------------------------------------------------------------------------------------------
# The per-epoch ELBO terms of a program


def _draw(guide, x, seed):
    """The guide trace elbo_terms draws after ``pyro.set_rng_seed(seed)`` (it traces the guide first)."""
    pyro.set_rng_seed(seed)
    return poutine.trace(guide).get_trace(x)


@pytest.mark.parametrize("order", ["z1_first", "z2_first"])
def test_elbo_terms_with_the_exact_posterior_is_log_px(two_layer, order):
    """The exact guide (multivariate normals: no closed-form KL against the model's diagonal
    normals) gives Monte-Carlo terms, and log p(x, z) - log q(z|x) = log p(x) at every draw."""
    x = two_layer.sample(8, torch.Generator().manual_seed(0))
    guide = TwoLayerPosterior(two_layer, order)
    pyro.set_rng_seed(7)
    terms = elbo_terms(two_layer, guide, x)
    assert torch.allclose(terms["elbo"], two_layer.log_marginal(x), atol=EXACT, rtol=0)
    z1 = _draw(guide, x, 7).nodes["z1"]["value"]
    recon = dist.Normal(z1 @ two_layer.weight.T + two_layer.bias, two_layer.sigma).log_prob(x).sum(-1)
    assert torch.allclose(terms["recon"], recon, atol=EXACT, rtol=0)
    assert torch.allclose(terms["elbo"], terms["recon"] - terms["kl"], atol=EXACT, rtol=0)


@pytest.mark.parametrize("order", ["z1_first", "z2_first"])
def test_elbo_terms_take_the_closed_form_kl_only_where_exact(two_layer, order):
    """Mean-field guide (diagonal normals): z2's prior depends on nothing, KL in closed form;
    z1's prior p(z1 | z2) depends on z2, closed form only when the guide draws z2 first."""
    x = two_layer.sample(8, torch.Generator().manual_seed(0))
    guide = TwoLayerPosterior(two_layer, order, std_scale=1.2, mean_field=True)
    pyro.set_rng_seed(11)
    terms = elbo_terms(two_layer, guide, x)
    trace = _draw(guide, x, 11)
    q1, q2 = trace.nodes["z1"]["fn"], trace.nodes["z2"]["fn"]
    z1, z2 = trace.nodes["z1"]["value"], trace.nodes["z2"]["value"]
    p2 = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    p1 = dist.Normal(z2 @ two_layer.coupling.T + two_layer.offset, two_layer.z1_std).to_event(1)
    kl2 = torch.distributions.kl_divergence(q2, p2)
    kl1 = torch.distributions.kl_divergence(q1, p1) if order == "z2_first" else q1.log_prob(z1) - p1.log_prob(z1)
    assert torch.allclose(terms["kl"], kl2 + kl1, atol=EXACT, rtol=0)


@pytest.mark.parametrize("order", ["z1_first", "z2_first"])
def test_elbo_terms_average_to_the_elbo(two_layer, order):
    """Over 4000 draws per image the terms average to the ELBO in closed form,
    log p(x) - KL(q || p(z1, z2 | x)) for the Gaussian q, within 5 standard errors."""
    x = two_layer.sample(2, torch.Generator().manual_seed(0))
    guide = TwoLayerPosterior(two_layer, order, std_scale=1.2, mean_field=True)
    draws = 4000
    pyro.set_rng_seed(3)
    elbo = elbo_terms(two_layer, guide, x.repeat(draws, 1))["elbo"].detach().view(draws, 2)
    mean, cov = two_layer.posterior(x)
    q_std = 1.2 * cov.diagonal().sqrt()  # the mean-field guide's, for u = [z1; z2]
    kl_posterior = torch.distributions.kl_divergence(  # KL(q || p(z1, z2 | x))   (2,)
        dist.MultivariateNormal(mean, scale_tril=torch.diag_embed(q_std.expand_as(mean))),
        dist.MultivariateNormal(mean, cov),
    )
    expected = (two_layer.log_marginal(x) - kl_posterior).detach()
    stderr = elbo.std(0) / math.sqrt(draws)
    assert ((elbo.mean(0) - expected).abs() < 5 * stderr).all()


def test_elbo_terms_sum_out_the_enumerated_cluster(mixture):
    """No KeyError on c: elbo = log p(x, z) - log q(z|x) with c summed out, recon = log p(x|z),
    kl = log q(z|x) - log sum_c p(z, c); with the exact posterior elbo = log p(x)."""
    x = mixture.sample(8, torch.Generator().manual_seed(0))
    for guide in (MixturePosterior(mixture), MixturePosterior(mixture, moment_matched=True, std_scale=1.3)):
        pyro.set_rng_seed(5)
        terms = elbo_terms(mixture, guide, x)
        site = _draw(guide, x, 5).nodes["z"]
        z, log_q = site["value"], site["fn"].log_prob(site["value"])
        log_pz = torch.logsumexp(
            mixture.probs.log() + dist.Normal(mixture.means, mixture.stds).log_prob(z[:, None, :]).sum(-1), -1
        )
        log_lik = dist.Normal(z @ mixture.weight.T + mixture.bias, mixture.sigma).log_prob(x).sum(-1)
        assert torch.allclose(terms["elbo"], model_log_joint(mixture, x, None, {"z": z}) - log_q, atol=EXACT)
        assert torch.allclose(terms["recon"], log_lik, atol=EXACT, rtol=0)
        assert torch.allclose(terms["kl"], log_q - log_pz, atol=EXACT, rtol=0)
    assert torch.allclose(
        elbo_terms(mixture, MixturePosterior(mixture), x)["elbo"], mixture.log_marginal(x), atol=EXACT, rtol=0
    )


def test_elbo_terms_of_a_one_site_model_keep_the_closed_form_kl():
    """PPCA with a diagonal guide: the KL is exactly Pyro's closed form, as before."""
    from pyro_vae.models.ppca import AmortizedLinearGaussian

    ppca = PPCA.random(6, 3, sigma=0.5, seed=1)
    guide = AmortizedLinearGaussian.mean_field(ppca)
    x = ppca.sample(5, torch.Generator().manual_seed(0))
    terms = elbo_terms(ppca, guide, x)
    q = poutine.trace(guide).get_trace(x).nodes["z"]["fn"]
    prior = dist.Normal(torch.zeros(3, dtype=torch.float64), 1.0).to_event(1)
    assert torch.equal(terms["kl"], torch.distributions.kl_divergence(q, prior).expand(5))
