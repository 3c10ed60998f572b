"""The importance-weighted estimator and its diagnostics, proved on PPCA (known log p(x)).

Tolerances, and why:

* EXACT = 1e-10: float64 identities (exact-posterior guide; nested samples; chunking). The
  only differences are the order of float64 sums, ~1e-14.
* Monte-Carlo checks use the estimator's own standard deviation: by the delta method
  Var[log p_K(x)] ~= Var(w) / (K E[w]^2) ~= 1/ESS - 1/K per image, and we allow 5 of them.
"""

import json
import math
import re

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

from pyro_vae.errors import PyroVAEError
from pyro_vae.evaluation import (
    active_units,
    auto_k_chunk,
    effective_sample_size,
    evaluate_log_px,
    importance_weighted_log_px,
    log_effective_sample_size,
    log_px_against_k,
    pareto_khat,
)
from pyro_vae.models.ppca import PPCA, AmortizedLinearGaussian, PPCAExactPosterior
from pyro_vae.plots import plot_khat_histogram, plot_log_px_against_k

EXACT = 1e-10


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


# ----------------------------------------------------------------------------------------------
# Fixtures: PPCA (float64, known answer) and a tiny Bernoulli VAE with batch norm


@pytest.fixture
def x(ppca):
    return ppca.sample(12, torch.Generator().manual_seed(0))


def wide_mean_field(ppca, widen=1.6):
    """The mean-field guide with standard deviations widened: imperfect, with light-tailed
    weights (PSIS k-hat < 0.5), so importance sampling converges at the 1/sqrt(K) rate."""
    guide = AmortizedLinearGaussian.mean_field(ppca)
    guide.scale = guide.scale.detach() * widen
    return guide


class TinyVAE(PyroModule):
    """z ~ N(0, I_2); x ~ Bernoulli(logits = MLP(z)), 12 binary pixels."""

    def __init__(self, data_dim=12, latent_dim=2, hidden=16):
        super().__init__()
        self.latent_dim = latent_dim
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, data_dim))

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            prior = dist.Normal(x.new_zeros(self.latent_dim), x.new_ones(self.latent_dim))
            z = pyro.sample("z", prior.to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


class TinyGuide(PyroModule):
    """q(z|x) = N(loc(h), exp(log_scale(h))), h = ReLU(BatchNorm(Linear(x)))."""

    def __init__(self, data_dim=12, latent_dim=2, hidden=16):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(data_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.loc = nn.Linear(hidden, latent_dim)
        self.log_scale = nn.Linear(hidden, latent_dim)

    def forward(self, x, y=None):
        h = self.body(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(self.loc(h), self.log_scale(h).exp()).to_event(1))


@pytest.fixture
def vae(request):
    """(model, guide, binary images) in float64 (exact comparisons) unless parametrised."""
    dtype = getattr(request, "param", torch.float64)
    torch.manual_seed(0)
    model, guide = TinyVAE().to(dtype), TinyGuide().to(dtype)
    images = torch.bernoulli(torch.full((9, 12), 0.3, dtype=dtype))
    return model, guide, images


# ----------------------------------------------------------------------------------------------
# Known answers on PPCA


@pytest.mark.parametrize("k,k_chunk,local_params", [(1, None, False), (2, 1, False), (7, 3, True), (64, None, False)])
def test_exact_posterior_gives_exact_log_px_for_every_k(x, k, k_chunk, local_params):
    """With q = p(z|x) every weight is p(x): log p_K(x) = ELBO = log p(x), ESS = K (to 1e-10).
    (Pyro's global param store, as used with SVI, or module-local params: no difference; a
    PyroModule must be built under the setting it is used with.)"""
    with pyro.settings.context(module_local_params=local_params):
        ppca = PPCA.random(6, 3, sigma=0.5, seed=1)
        exact = ppca.log_marginal(x).detach()
        est = importance_weighted_log_px(
            ppca, PPCAExactPosterior(ppca), x, k=k, k_chunk=k_chunk, return_log_weights=True
        )
    assert est.log_px.dtype == torch.float64 and est.log_px.shape == (12,)
    assert torch.allclose(est.log_px, exact, atol=EXACT, rtol=0)
    assert torch.allclose(est.elbo, exact, atol=EXACT, rtol=0)
    assert torch.allclose(est.ess, torch.full_like(est.ess, k), atol=0, rtol=EXACT)
    assert est.log_weights.shape == (12, k)


def test_estimate_converges_to_exact_log_px(ppca):
    """Error at K=1000 is within 5 estimator sds of 0 per image and 10x smaller than at K=1."""
    x = ppca.sample(50, torch.Generator().manual_seed(4))
    exact = ppca.log_marginal(x).detach()
    guide = wide_mean_field(ppca)
    err1 = importance_weighted_log_px(ppca, guide, x, k=1, seed=2).log_px - exact
    est = importance_weighted_log_px(ppca, guide, x, k=1000, seed=2)
    err = est.log_px - exact
    sd = (1 / est.ess - 1 / 1000).sqrt()  # delta-method sd of log p_K(x) per image
    assert (err.abs() < 5 * sd).all()
    assert err.mean().abs() < 5 * sd.pow(2).mean().sqrt() / math.sqrt(50)
    assert err.pow(2).mean().sqrt() < 0.1 * err1.pow(2).mean().sqrt()
    assert err.abs().max() < 0.2  # in nats, for a reader: sd here is ~0.05 per image


def test_log_px_is_not_below_the_elbo(ppca, x):
    """On the same samples log mean w >= mean log w per image (Jensen); the ELBO is below
    log p(x) by about KL(q || p(z|x)), which is > 0.5 nats for the widened mean-field guide."""
    exact = ppca.log_marginal(x).detach()
    est = importance_weighted_log_px(ppca, wide_mean_field(ppca), x, k=200)
    assert (est.log_px >= est.elbo).all()
    assert torch.equal(est.gap, est.log_px - est.elbo)
    assert (exact - est.elbo).mean() > 0.5
    assert (est.log_px - exact).abs().mean() < 0.1


def test_khat_with_exact_and_near_exact_posteriors(ppca, x):
    """Exact posterior: constant weights (k-hat -inf by convention). A 30% too wide posterior
    has bounded weights: k-hat < 0.5 for every image. A too narrow one (std scale s = 0.3) has
    heavy tails: for Gaussians the weights' tail index is k = 1 - s^2 = 0.91."""
    exact = importance_weighted_log_px(ppca, PPCAExactPosterior(ppca), x, k=200, return_log_weights=True)
    assert np.isneginf(pareto_khat(exact.log_weights)).all()
    wide = importance_weighted_log_px(ppca, PPCAExactPosterior(ppca, 1.3), x, k=500, return_log_weights=True)
    assert (pareto_khat(wide.log_weights) < 0.5).all()
    narrow = importance_weighted_log_px(ppca, PPCAExactPosterior(ppca, 0.3), x, k=500, return_log_weights=True)
    assert np.median(pareto_khat(narrow.log_weights)) > 0.7


def test_active_units_counts_the_nonzero_columns():
    """W with columns 1 and 3 zero: posterior means are constant there, 3 of 5 units active."""
    model = PPCA.random(8, 5, sigma=0.5, zero_columns=(1, 3), seed=2)
    images = model.sample(60, torch.Generator().manual_seed(3))
    result = evaluate_log_px(model, PPCAExactPosterior(model), images, k=5, batch_size=25, progress=False)
    assert result.z_mean_source == "analytic"
    assert result.active_units() == 3
    loc, _ = model.posterior(images)
    assert np.allclose(result.z_mean, loc.detach().numpy(), atol=EXACT)


class SampledMeanGuide(PyroModule):
    """The exact PPCA posterior written as a transformed distribution, which has no ``.mean``."""

    def __init__(self, ppca):
        super().__init__()
        object.__setattr__(self, "_ppca", ppca)

    def forward(self, x, y=None):
        loc, cov = self._ppca.posterior(x)
        base = dist.Normal(torch.zeros_like(loc), torch.ones_like(loc)).to_event(1)
        with pyro.plate("data", x.shape[0], dim=-1):
            transform = dist.transforms.LowerCholeskyAffine(loc, torch.linalg.cholesky(cov))
            pyro.sample("z", dist.TransformedDistribution(base, [transform]))


def test_active_units_from_guide_samples_when_there_is_no_mean():
    """Sample means of K=500 draws: noise variance 1/K = 0.002 in the inactive (prior) dims,
    well under the 0.01 threshold; active dims vary by O(1)."""
    model = PPCA.random(8, 5, sigma=0.5, zero_columns=(1, 3), seed=2)
    images = model.sample(40, torch.Generator().manual_seed(3))
    est = importance_weighted_log_px(model, SampledMeanGuide(model), images, k=500)
    assert est.z_mean_source == "samples"
    assert active_units(est.z_mean) == 3
    assert torch.allclose(est.log_px, model.log_marginal(images).detach(), atol=1e-8, rtol=0)


class LabelShiftPPCA(PyroModule):
    """PPCA with a per-class offset: x ~ N(W z + b + c_y, sigma^2 I), so log p(x|y) is known."""

    def __init__(self, ppca, offsets):
        super().__init__()
        object.__setattr__(self, "_ppca", ppca)
        self.offsets = offsets  # (C, P)

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            loc = z @ self._ppca.weight.T + self._ppca.bias + self.offsets[y]  # (B, P)
            pyro.sample("x", dist.Normal(loc, self._ppca.sigma).to_event(1), obs=x)


class LabelShiftPosterior(PyroModule):
    """Its exact posterior: the PPCA posterior of x - c_y."""

    def __init__(self, ppca, offsets):
        super().__init__()
        object.__setattr__(self, "_exact", PPCAExactPosterior(ppca))
        self.offsets = offsets

    def forward(self, x, y=None):
        return self._exact(x - self.offsets[y])


def test_labels_are_tiled_with_their_images(ppca):
    """With labels, each image is scored with its own label: exact log p(x|y) for every image
    (a mix-up of rows between x and y would be off by O(1) nats)."""
    offsets = 3.0 * torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 2, 2, 0, 1])
    images = ppca.sample(7, torch.Generator().manual_seed(2)) + offsets[labels]
    model, guide = LabelShiftPPCA(ppca, offsets), LabelShiftPosterior(ppca, offsets)
    exact = ppca.log_marginal(images - offsets[labels]).detach()
    result = evaluate_log_px(model, guide, images, labels, k=9, batch_size=3, k_chunk=4, progress=False)
    assert np.allclose(result.log_px, exact.numpy(), atol=EXACT, rtol=0)


# ----------------------------------------------------------------------------------------------
# Sampling design: chunks, seeds, nested prefixes, per-image values


def test_chunking_does_not_change_the_result(vae):
    """Particle j is drawn from its own seed, so k_chunk only changes the grouping of model calls."""
    model, guide, images = vae
    results = [
        importance_weighted_log_px(model, guide, images, k=23, k_chunk=c, seed=1, return_log_weights=True)
        for c in (1, 7, 23, None)
    ]
    for r in results[1:]:
        for name in ("log_px", "elbo", "log_ess", "z_mean", "log_weights"):
            assert torch.allclose(getattr(r, name), getattr(results[0], name), atol=EXACT, rtol=0)


def test_pyros_validation_checks_the_untiled_batch_once(vae):
    """With Pyro's validation on, the model is checked once per batch on its B images (one
    particle; with an automatic k_chunk, the particle that measures the memory), and the chunks,
    k_chunk tiled copies of every image, run unchecked. Data outside the support are refused."""
    from pyro.infer.util import is_validation_enabled

    model, guide, images = vae
    calls = []  # (validation on?, rows) per model call

    def recording(x, y=None):
        calls.append((is_validation_enabled(), x.shape[0]))
        return model(x, y)

    with pyro.validation_enabled(True):
        for k_chunk in (3, None):
            calls.clear()
            importance_weighted_log_px(recording, guide, images, k=6, k_chunk=k_chunk)
            assert [rows for checked, rows in calls if checked] == [9]
            assert [rows for checked, rows in calls if not checked] == ([27, 27] if k_chunk else [54])
        grey = images.clone()
        grey[0, 0] = 0.5
        with pytest.raises(ValueError, match="support"):
            importance_weighted_log_px(model, guide, grey, k=6, k_chunk=3)
    with pyro.validation_enabled(False):
        calls.clear()
        importance_weighted_log_px(recording, guide, images, k=6, k_chunk=3)
        assert calls == [(False, 27), (False, 27)]


def test_same_seed_same_numbers_and_the_caller_rng_is_untouched(vae):
    model, guide, images = vae
    state = torch.get_rng_state()
    a = importance_weighted_log_px(model, guide, images, k=10, seed=3)
    b = importance_weighted_log_px(model, guide, images, k=10, seed=3)
    c = importance_weighted_log_px(model, guide, images, k=10, seed=4)
    assert torch.equal(a.log_px, b.log_px) and torch.equal(a.elbo, b.elbo)
    assert not torch.allclose(a.log_px, c.log_px)
    assert torch.equal(torch.get_rng_state(), state)


def test_smaller_k_uses_the_first_particles_of_larger_k(ppca, x):
    """Nested samples: log p_k(x) from the curve equals the estimator run with k itself."""
    guide = wide_mean_field(ppca)
    curve = log_px_against_k(ppca, guide, x, ks=(100, 1, 10), batch_size=5, seed=7)
    assert curve.ks == (1, 10, 100)
    for col, k in enumerate(curve.ks):
        direct = np.concatenate(
            [
                importance_weighted_log_px(ppca, guide, x[i : i + 5], k=k, seed=7, batch_index=b).log_px
                for b, i in enumerate(range(0, 12, 5))
            ]
        )
        assert np.allclose(curve.log_px[:, col], direct, atol=EXACT, rtol=0)
    exact = ppca.log_marginal(x).detach().mean().item()
    assert curve.mean()[0] < curve.mean()[-1]
    assert abs(curve.mean()[-1] - exact) < 0.1
    assert json.dumps(curve.summary(), allow_nan=False)


def test_the_main_pass_gives_the_curve_from_its_own_samples(ppca, x):
    """evaluate_log_px(curve_ks=..., curve_images=n) returns the curve that log_px_against_k
    computes in a second pass on the first n images (same batches and seeds), and its last
    column is the estimate itself."""
    guide = wide_mean_field(ppca)
    result = evaluate_log_px(
        ppca, guide, x, k=100, batch_size=5, seed=7, progress=False, curve_ks=(1, 10, 100), curve_images=10
    )
    separate = log_px_against_k(ppca, guide, x[:10], ks=(1, 10, 100), batch_size=5, seed=7)
    assert result.curve.ks == (1, 10, 100) and result.curve.log_px.shape == (10, 3)
    assert np.allclose(result.curve.log_px, separate.log_px, atol=EXACT, rtol=0)
    assert np.allclose(result.curve.log_px[:, -1], result.log_px[:10], atol=EXACT, rtol=0)
    partial = evaluate_log_px(
        ppca, guide, x, k=100, batch_size=5, seed=7, progress=False, curve_ks=(1, 10), curve_images=7
    )  # the first 7 rows of the same numbers
    assert np.allclose(partial.curve.log_px, result.curve.log_px[:7, :2], atol=EXACT, rtol=0)
    with pytest.raises(PyroVAEError, match="exceeds the K"):
        evaluate_log_px(ppca, guide, x, k=10, batch_size=5, progress=False, curve_ks=(100,), curve_images=5)


def test_values_are_per_image(ppca, x):
    """Different images get different values; with the exact posterior each image's value is
    its own log p(x) whether it is evaluated alone or in a batch (sum of singles = batch sum)."""
    pair = x[:2]
    est = importance_weighted_log_px(ppca, wide_mean_field(ppca), pair, k=50)
    assert (est.log_px[0] - est.log_px[1]).abs() > 0.1
    exact_guide = PPCAExactPosterior(ppca)
    batch = importance_weighted_log_px(ppca, exact_guide, pair, k=20).log_px
    singles = [importance_weighted_log_px(ppca, exact_guide, pair[i : i + 1], k=20).log_px for i in range(2)]
    assert torch.allclose(batch, torch.cat(singles), atol=EXACT, rtol=0)
    assert abs(batch.sum() - sum(s.sum() for s in singles)) < EXACT


@pytest.mark.parametrize("vae", [torch.float32], indirect=True)
def test_float32_model_accumulates_in_float64(vae):
    """Log-weights come from a float32 model; everything returned is float64 and consistent."""
    model, guide, images = vae
    est = importance_weighted_log_px(model, guide, images, k=30, k_chunk=8, return_log_weights=True)
    for t in (est.log_px, est.elbo, est.log_ess, est.log_weights, est.z_mean):
        assert t.dtype == torch.float64
    lw = est.log_weights
    assert torch.allclose(est.log_px, torch.logsumexp(lw, 1) - math.log(30), atol=EXACT, rtol=0)
    assert torch.allclose(est.elbo, lw.mean(1), atol=EXACT, rtol=0)
    assert torch.allclose(est.log_ess, log_effective_sample_size(lw), atol=EXACT, rtol=0)


def test_modules_are_evaluated_in_eval_mode_and_restored(vae):
    """Batch norm uses running statistics (no update), and each module's mode comes back."""
    model, guide, images = vae
    guide.train()
    model.eval()
    running = guide.body[1].running_mean.clone()
    est = importance_weighted_log_px(model, guide, images, k=5)
    assert guide.training and guide.body[1].training and not model.training
    assert torch.equal(guide.body[1].running_mean, running)
    guide.eval()
    assert torch.equal(importance_weighted_log_px(model, guide, images, k=5).log_px, est.log_px)


# ----------------------------------------------------------------------------------------------
# Diagnostics


def test_effective_sample_size_matches_its_definition():
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    expected = w.sum(1) ** 2 / (w**2).sum(1)
    assert torch.allclose(effective_sample_size(w.log()), expected, atol=EXACT, rtol=0)
    # and in log space for weights that would overflow
    assert torch.allclose(log_effective_sample_size(w.log() + 1000.0), expected.log(), atol=EXACT, rtol=0)


def test_pareto_khat_values():
    """Known tails: Pareto(shape 1) weights have k = 1; Gaussian log-weights with sd 0.3 have
    bounded-ish light tails (k < 0.5). Special values: K too small -> NaN, constant -> -inf."""
    rng = np.random.default_rng(0)
    heavy = -np.log(rng.uniform(size=(5, 4000)))  # log of Pareto(1) draws: k = 1
    light = 0.3 * rng.normal(size=(5, 4000))
    assert (pareto_khat(heavy) > 0.7).all()
    assert (pareto_khat(light) < 0.5).all()
    assert np.isnan(pareto_khat(light[:, :20])).all()
    assert np.isneginf(pareto_khat(np.full((2, 100), -3.0))).all()
    assert pareto_khat(light[0]).shape == ()


# ----------------------------------------------------------------------------------------------
# The split driver, its result object, and the pictures


def test_evaluate_log_px_summary_and_table(ppca):
    images = ppca.sample(23, torch.Generator().manual_seed(5))
    guide = wide_mean_field(ppca)
    result = evaluate_log_px(ppca, guide, images, k=40, batch_size=10, k_chunk=15, seed=2, progress=False, split="test")
    assert result.log_px.shape == result.elbo.shape == result.khat.shape == (23,)
    # the driver is the estimator applied batch by batch, batch b seeded with batch_index=b
    second = importance_weighted_log_px(ppca, guide, images[10:20], k=40, seed=2, batch_index=1)
    assert np.allclose(result.log_px[10:20], second.log_px.numpy(), atol=EXACT, rtol=0)
    s = result.summary()
    json.dumps(s, allow_nan=False)
    assert s["n_images"] == 23 and s["k"] == 40 and s["split"] == "test"
    assert s["log_px_mean"] == pytest.approx(result.log_px.mean())
    assert s["log_px_stderr"] == pytest.approx(result.log_px.std(ddof=1) / math.sqrt(23))
    assert s["gap_mean"] == pytest.approx(result.log_px.mean() - result.elbo.mean())
    assert 1 <= s["ess_min"] <= s["ess_mean"] <= 40
    assert s["ess_fraction_mean"] == pytest.approx(s["ess_mean"] / 40)
    assert 0 <= s["khat_share_above_0.7"] <= 1 and s["active_units"] == 3
    table = result.table()
    assert "log p_K(x)" in table and "k-hat > 0.7" in table and "active units" in table
    value_columns = {re.match(r"^  (.+?)\s{2,}(\S.*)$", line).start(2) for line in table.splitlines()[1:]}
    assert len(value_columns) == 1  # values aligned in one column


def test_evaluate_log_px_shows_progress_on_stderr(ppca, capsys):
    images = ppca.sample(4, torch.Generator().manual_seed(5))
    evaluate_log_px(ppca, PPCAExactPosterior(ppca), images, k=2, batch_size=3, progress=True)
    assert "4/4" in capsys.readouterr().err


def test_plots_are_written_atomically(ppca, x, tmp_path):
    guide = wide_mean_field(ppca)
    result = evaluate_log_px(ppca, guide, x, k=100, batch_size=6, progress=False)
    curve = log_px_against_k(ppca, guide, x, ks=(1, 10, 100), batch_size=6)
    khat_png = plot_khat_histogram(np.append(result.khat, [np.nan, -np.inf]), tmp_path / "plots" / "khat.png")
    curve_png = plot_log_px_against_k(curve, tmp_path / "plots" / "curve.png", exact=ppca.log_marginal(x).mean().item())
    for png in (khat_png, curve_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["curve.png", "khat.png"]


# ----------------------------------------------------------------------------------------------
# Memory and errors


def test_k_chunk_follows_the_memory_budget(vae):
    model, guide, images = vae
    assert auto_k_chunk(model, guide, images, k=50, memory_budget_mb=1e-6) == 1
    assert auto_k_chunk(model, guide, images, k=50, memory_budget_mb=1e3) == 50
    mid = auto_k_chunk(model, guide, images, k=10_000, memory_budget_mb=1.0)
    assert 1 < mid < 10_000
    assert auto_k_chunk(model, guide, images, k=10_000, memory_budget_mb=2.0) >= 2 * mid - 1


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=0),
        dict(k=-3),
        dict(k=2.5),
        dict(k=True),
        dict(k=4, k_chunk=0),
        dict(k=4, seed=-1),
        dict(k=4, memory_budget_mb=0),
    ],
)
def test_bad_arguments_are_clear_errors(vae, kwargs):
    model, guide, images = vae
    with pytest.raises(PyroVAEError, match="must be"):
        importance_weighted_log_px(model, guide, images, **kwargs)


def test_driver_input_errors(ppca, x):
    guide = PPCAExactPosterior(ppca)
    with pytest.raises(PyroVAEError, match="batch_size"):
        evaluate_log_px(ppca, guide, x, k=5, batch_size=0, progress=False)
    with pytest.raises(PyroVAEError, match="labels"):
        evaluate_log_px(ppca, guide, x, torch.zeros(3), k=5, batch_size=4, progress=False)
    with pytest.raises(PyroVAEError, match="use batch_size <= 6710"):
        evaluate_log_px(ppca, guide, x, k=5000, batch_size=10_000, progress=False)
    with pytest.raises(PyroVAEError, match="no images"):
        evaluate_log_px(ppca, guide, x[:0], k=5, batch_size=4, progress=False)


class _Failing(PyroModule):
    """A model whose call raises the given exception (to test error translation)."""

    def __init__(self, error):
        super().__init__()
        self.error = error

    def forward(self, x, y=None):
        raise self.error


def test_out_of_memory_becomes_a_hint_to_use_smaller_batches(ppca, x):
    oom = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: not enough "
        "memory: you tried to allocate 81920000000 bytes."
    )
    with pytest.raises(PyroVAEError, match="smaller batch size, a smaller k_chunk"):
        importance_weighted_log_px(_Failing(oom), PPCAExactPosterior(ppca), x, k=4, k_chunk=2)
    other = RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        importance_weighted_log_px(_Failing(other), PPCAExactPosterior(ppca), x, k=4, k_chunk=2)


class _GlobalSiteModel(PyroModule):
    """A shared offset outside the data plate: not a per-image model."""

    def forward(self, x, y=None):
        shift = pyro.sample("shift", dist.Normal(x.new_zeros(()), 1.0))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(shift, 1.0).expand(x.shape).to_event(1), obs=x)


class _GlobalSiteGuide(PyroModule):
    def forward(self, x, y=None):
        pyro.sample("shift", dist.Normal(x.new_zeros(()), 1.0))


class _NoGuideSite(PyroModule):
    def forward(self, x, y=None):
        pass


class _NoLatentModel(PyroModule):
    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(x.new_zeros(()), 1.0).expand(x.shape).to_event(1), obs=x)


def test_models_outside_the_interface_are_clear_errors(ppca, x):
    with pytest.raises(PyroVAEError, match="site 'shift' has log_prob shape"):
        importance_weighted_log_px(_GlobalSiteModel(), _GlobalSiteGuide(), x, k=3)
    with pytest.raises(PyroVAEError, match="the model samples 'z' but the guide does not"):
        importance_weighted_log_px(ppca, _NoGuideSite(), x, k=3)
    with pytest.raises(PyroVAEError, match="auxiliary"):
        importance_weighted_log_px(_NoLatentModel(), PPCAExactPosterior(ppca), x, k=3)


def test_nan_weights_are_a_clear_error(ppca, x):
    """(With validation on, Pyro itself rejects the NaN first; without it, we do.)"""
    bad = x.clone()
    bad[0, 0] = math.nan
    with pyro.validation_enabled(False), pytest.raises(PyroVAEError, match="NaN for 1 image"):
        importance_weighted_log_px(ppca, wide_mean_field(ppca), bad, k=3)


def test_freed_memory_is_returned_when_the_process_grows_without_changing_the_numbers(vae, monkeypatch):
    """glibc keeps the freed chunks' blocks in a fragmented heap (a VampPrior evaluation grew to
    22 GB); scoring gives them back once the resident memory has grown by the memory budget, and
    the estimate is unchanged."""
    import itertools

    from pyro_vae.evaluation import memory_budget

    model, guide, images = vae
    kept = importance_weighted_log_px(model, guide, images, k=40, k_chunk=1, seed=3)
    trims = []
    growing = itertools.count(0, 2**20)  # a MB more at every look
    monkeypatch.setattr(memory_budget, "_MALLOC_TRIM", lambda pad: trims.append(pad))
    monkeypatch.setattr(memory_budget, "resident_bytes", lambda: next(growing))
    monkeypatch.setattr(memory_budget, "_resident_mark", [])
    trimmed = importance_weighted_log_px(model, guide, images, k=40, k_chunk=1, seed=3, memory_budget_mb=4)
    assert 5 <= len(trims) <= 8  # every 5 or 6 chunks of the 40
    assert torch.equal(trimmed.log_px, kept.log_px)


def result_with(khat, ess_fraction, k=100):
    """An EvaluationResult of 20 images with the given k-hat and ESS / K (each one value or 20)."""
    from pyro_vae.evaluation import EvaluationResult

    n = 20
    log_px = np.linspace(-100.0, -90.0, n)
    return EvaluationResult(
        log_px=log_px,
        elbo=log_px - 3.0,
        log_ess=np.log(np.broadcast_to(np.asarray(ess_fraction, dtype=np.float64) * k, (n,)).copy()),
        khat=np.broadcast_to(np.asarray(khat, dtype=np.float64), (n,)).copy(),
        z_mean=None,
        z_mean_source="none",
        k=k,
        seed=0,
        batch_size=n,
        k_chunk=k,
        seconds=1.0,
        split="test",
    )


def test_a_weak_estimate_gets_a_verdict_in_the_summary_and_the_table():
    """Issue 26 point 1: past the PSIS thresholds (k-hat > 0.7) and with an ESS that is a small
    part of K, the result says so, says what log p_K still is, and what to do; the numbers stay."""
    result = result_with(khat=1.2, ess_fraction=0.011)
    s = result.summary()
    verdict = s["verdict"]
    assert verdict == result.verdict
    assert "k-hat > 0.7 for 100.0% of images" in verdict and "unreliable" in verdict
    assert "ESS" in verdict and "1.1 of K = 100" in verdict
    assert "still a stochastic lower bound" in verdict and "may be large" in verdict
    assert "raise K" in verdict and "--guide iaf" in verdict and "lowrank" in verdict
    table = result.table()
    assert "verdict" in table and "still a stochastic lower bound" in " ".join(table.split())
    value_columns = {re.match(r"^  (.+?)\s{2,}(\S.*)$", line).start(2) for line in table.splitlines()[1:]}
    assert len(value_columns) == 1  # the verdict's lines keep the value column
    assert s["log_px_mean"] == pytest.approx(-95.0) and s["khat_share_above_0.7"] == 1.0


def test_slow_convergence_and_a_sound_estimate():
    slow = result_with(khat=0.6, ess_fraction=0.5).summary()["verdict"]
    assert "k-hat between 0.5 and 0.7 for 100.0% of images" in slow and "converges slowly" in slow
    assert "ESS" not in slow
    few = result_with(khat=0.3, ess_fraction=0.02).summary()["verdict"]
    assert "ESS" in few and "k-hat" not in few.split(".")[0]
    sound = result_with(khat=0.3, ess_fraction=0.5)
    assert sound.summary()["verdict"] is None and sound.verdict is None
    assert "verdict" not in sound.table()


def test_freed_memory_is_given_back_only_once_the_process_grew(monkeypatch):
    """The estimator's malloc_trim runs when the resident memory has grown by more than the slack
    since the last trim, not after every chunk: each trim makes the next chunk fault its pages in
    again."""
    from pyro_vae.evaluation import memory_budget

    trims, resident = [], iter([100, 150, 210, 260, 240, 250, 400, 320])
    monkeypatch.setattr(memory_budget, "_MALLOC_TRIM", lambda pad: trims.append(pad))
    monkeypatch.setattr(memory_budget, "resident_bytes", lambda: next(resident))
    monkeypatch.setattr(memory_budget, "_resident_mark", [])
    done = [memory_budget.return_freed_memory(100) for _ in range(5)]  # 100 (mark), 150, 210 -> 260
    assert done == [False, False, True, False, False] and trims == [0]  # mark 260 after the trim
    assert memory_budget.return_freed_memory(100) is True and memory_budget._resident_mark == [320]


def test_the_default_evaluation_returns_no_memory_while_its_heap_stays(monkeypatch):
    """A default-model batch of several chunks trims nothing once its working set is resident."""
    from pyro_vae.config import FitConfig
    from pyro_vae.evaluation import memory_budget
    from pyro_vae.variants import build_vae

    trims = []
    real = memory_budget._MALLOC_TRIM
    if real is None or memory_budget.resident_bytes() is None:
        pytest.skip("no glibc malloc_trim or /proc here")
    monkeypatch.setattr(memory_budget, "_MALLOC_TRIM", lambda pad: trims.append(pad) or real(pad))
    monkeypatch.setattr(memory_budget, "_resident_mark", [])
    pyro.set_rng_seed(0)
    vae = build_vae(FitConfig(hidden=(64,), latent_dim=4), (1, 28, 28), 10)
    x = torch.rand(20, 1, 28, 28).round()
    for _ in range(3):
        importance_weighted_log_px(vae.model, vae.guide, x, k=40, k_chunk=5, memory_budget_mb=64)
    assert trims == []
