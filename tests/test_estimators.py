"""The estimators of docs/objectives.md (iwae-dreg, stl, miwae, piwae, ciwae) against what defines them.

On probabilistic PCA, where everything is known in closed form (float64 throughout):

* with the exact posterior as the guide, STL's and DReG's gradients for the guide's parameters are
  0 for every draw (log p(x, z) - log q(z|x) = log p(x) for every z), while IWAE's are not;
* the loss values equal the bounds computed by hand from the same draws' log-weights;
* the model's gradient is IWAE's (DReG, PIWAE) or the ELBO's (STL) for every draw, and the guide's
  gradient is MIWAE's for every draw (PIWAE);
* the guide's mean gradient over many draws is IWAE's (DReG) or the ELBO's (STL), within
  Monte-Carlo tolerance, and a known biased estimator (IWAE with STL's log q) is told apart.

The handler that detaches the guide's parameters is checked on every built-in guide and a user's own;
the CLI trains with them, and a resumed run continues exactly.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.nn import PyroModule, PyroParam
from test_train import cli_args
from torch.distributions import constraints

from pyro_vae.cli.fit import main as fit_main
from pyro_vae.config import FitConfig
from pyro_vae.errors import ConfigError
from pyro_vae.models.ppca import PPCA, AmortizedLinearGaussian
from pyro_vae.objectives import (
    DetachedParameters,
    ParticleBound,
    Scaled,
    build_elbo,
    iwae_bound,
    trace_log_density,
)
from pyro_vae.variants import build_vae, check

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread

ESTIMATORS = ("iwae-dreg", "stl", "miwae", "piwae", "ciwae")
K, M = 6, 2  # particles per image; M groups (bounds) of K / M for miwae and piwae


def elbo(name: str, particles: int = K, **options):
    bounds = M if name in ("miwae", "piwae") else None
    return build_elbo(name, particles, FitConfig(elbo=name, particles=particles, iw_bounds=bounds, **options))


class LinearFullCovarianceGuide(PyroModule):
    """q(z|x) = N(A x + c, L L^T) with learnable A, c and L; :meth:`exact` starts it at a PPCA's
    exact posterior (A = M^{-1} W^T, c = -A b, L L^T = sigma^2 M^{-1})."""

    def __init__(self, ppca: PPCA):
        super().__init__()
        d, p = ppca.latent_dim, ppca.data_dim
        self.weight = torch.nn.Parameter(torch.zeros(d, p, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
        self.scale_tril = PyroParam(torch.eye(d, dtype=torch.float64), constraint=constraints.lower_cholesky)

    @classmethod
    def exact(cls, ppca: PPCA) -> LinearFullCovarianceGuide:
        guide = cls(ppca)
        with torch.no_grad():
            w, b, sigma = ppca.weight, ppca.bias, float(ppca.sigma)
            m = w.T @ w + sigma**2 * torch.eye(ppca.latent_dim, dtype=w.dtype)
            a = torch.linalg.solve(m, w.T)
            guide.weight.copy_(a)
            guide.bias.copy_(-(a @ b))
            guide.scale_tril = torch.linalg.cholesky(sigma**2 * torch.linalg.inv(m))
        return guide

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("z", dist.MultivariateNormal(x @ self.weight.T + self.bias, scale_tril=self.scale_tril))


def gradients(loss_module, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """(the guide's gradient, the model's gradient), each flattened, of one loss evaluation."""
    model, guide = loss_module.model, loss_module.guide
    for p in loss_module.parameters():
        p.grad = None
    loss_module(*args).backward()
    flat = [torch.cat([p.grad.reshape(-1) for p in m.parameters()]) for m in (guide, model)]
    return flat[0], flat[1]


def seeded(seed, loss_module, *args):
    pyro.set_rng_seed(seed)
    return gradients(loss_module, *args)


# -- the defining property: no gradient for the guide at the exact posterior ------------------


@pytest.mark.parametrize("name", ["stl", "iwae-dreg"])
@pytest.mark.parametrize("particles", [1, 5])
def test_guide_gradient_is_zero_for_every_draw_at_the_exact_posterior(ppca, name, particles):
    """Roundoff of a few float64 solves is ~1e-13; IWAE's (and the ELBO's) gradient, same draws,
    is O(1): a residual score term of any size would show."""
    guide = LinearFullCovarianceGuide.exact(ppca)
    x = ppca.sample(8, torch.Generator().manual_seed(0))
    reference = "iwae" if name == "iwae-dreg" else "trace"
    for seed in range(10):
        guide_grad, model_grad = seeded(seed, elbo(name, particles)(ppca, guide), x)
        reference_grad, _ = seeded(seed, build_elbo(reference, particles)(ppca, guide), x)
        assert guide_grad.abs().max() < 1e-9, (seed, guide_grad)
        assert reference_grad.abs().max() > 1e-2  # the score term that STL and DReG drop
        assert model_grad.abs().max() > 1e-2  # the model still learns (W is not at its optimum)


# -- values: the bounds, from the same draws' log-weights computed by hand ---------------------


def by_hand_log_weights(ppca, guide, x, seed, particles=K):
    """log w (particles, B) = log p(x, z) - log q(z|x) for the draws the estimators make with
    ``seed``: the guide's z, drawn in the same particle plate, then plain torch densities."""
    pyro.set_rng_seed(seed)
    plate = pyro.plate("num_particles_vectorized", particles, dim=-2)
    z = poutine.trace(plate(guide)).get_trace(x).nodes["z"]["value"].detach()  # (particles, B, D)
    w, b, sigma = (t.detach() for t in (ppca.weight, ppca.bias, ppca.sigma))
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_lik = torch.distributions.Normal(z @ w.T + b, sigma).log_prob(x).sum(-1)
    loc = x @ guide.weight.detach().T + guide.bias.detach()
    log_q = torch.distributions.Normal(loc, guide.scale.detach()).log_prob(z).sum(-1)
    return log_prior + log_lik - log_q


def logmeanexp(t: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(t, dim) - math.log(t.shape[dim])


BY_HAND = {
    "iwae-dreg": lambda lw: logmeanexp(lw, 0),  # IWAE(K)
    "stl": lambda lw: lw.mean(0),  # the ELBO, averaged over the particles
    "miwae": lambda lw: logmeanexp(lw.reshape(M, K // M, -1), 1).mean(0),  # (1/M) sum_m IWAE(K/M)
    "piwae": lambda lw: logmeanexp(lw, 0),  # the model's bound, IWAE(M K)
    "ciwae": lambda lw: 0.3 * lw.mean(0) + 0.7 * logmeanexp(lw, 0),  # beta ELBO + (1 - beta) IWAE
}


@pytest.mark.parametrize("name", ESTIMATORS)
def test_loss_values_are_the_bounds_computed_by_hand(ppca, name):
    guide = AmortizedLinearGaussian.mean_field(ppca)
    x = ppca.sample(5, torch.Generator().manual_seed(0))
    options = {"ciwae_beta": 0.3} if name == "ciwae" else {}
    for seed in range(3):
        bound = BY_HAND[name](by_hand_log_weights(ppca, guide, x, seed))  # (B,)
        pyro.set_rng_seed(seed)
        loss = elbo(name, **options)(ppca, guide)(x)
        assert loss.item() == pytest.approx(-float(bound.sum()), rel=1e-12, abs=1e-10)
        # on a batch of B of N images, each image's bound times N / B
        pyro.set_rng_seed(seed)
        scaled = elbo(name, **options)(Scaled(ppca), Scaled(guide))(x, None, 40 / 5, 1.0)
        assert scaled.item() == pytest.approx(-8 * float(bound.sum()), rel=1e-12)


def test_the_bounds_differ_where_they_should(ppca):
    """The by-hand values are not all one number: MIWAE(2, 3) <= IWAE(6), the ELBO below both."""
    guide = AmortizedLinearGaussian.mean_field(ppca)
    x = ppca.sample(5, torch.Generator().manual_seed(0))
    lw = by_hand_log_weights(ppca, guide, x, 0)
    iwae, miwae, stl = (BY_HAND[n](lw).sum() for n in ("iwae-dreg", "miwae", "stl"))
    assert stl < miwae - 0.01 and miwae < iwae - 0.01


def test_stl_keeps_the_kl_weight_as_trace_does(ppca):
    """STL weighs sites as Trace_ELBO does (N / B on all, beta on latent ones): same value."""
    guide = AmortizedLinearGaussian.mean_field(ppca)
    x = ppca.sample(5, torch.Generator().manual_seed(0))
    args = (x, None, 4.0, 0.25)
    pyro.set_rng_seed(1)
    stl = elbo("stl")(Scaled(ppca), Scaled(guide))(*args).item()
    pyro.set_rng_seed(1)
    trace = build_elbo("trace", K)(Scaled(ppca), Scaled(guide))(*args).item()
    assert stl == pytest.approx(trace, rel=1e-12)


# -- gradients, draw by draw, where they are defined to be another estimator's ----------------


@pytest.mark.parametrize(
    ("name", "model_reference", "guide_reference"),
    [
        ("iwae-dreg", ("iwae", K), None),
        ("stl", ("trace", K), None),
        ("piwae", ("iwae", K), ("miwae", K)),
    ],
)
def test_gradients_equal_their_reference_for_every_draw(ppca, name, model_reference, guide_reference):
    """DReG's model gradient is IWAE's, STL's the ELBO's, PIWAE's IWAE(M K)'s; PIWAE's guide
    gradient is MIWAE(M, K)'s: identities per draw (same seed, same draws), to float64 roundoff."""
    guide = AmortizedLinearGaussian.mean_field(ppca)
    x = ppca.sample(5, torch.Generator().manual_seed(0))
    for seed in range(3):
        guide_grad, model_grad = seeded(seed, elbo(name)(ppca, guide), x)
        _, reference_model_grad = seeded(seed, elbo(model_reference[0], model_reference[1])(ppca, guide), x)
        assert torch.allclose(model_grad, reference_model_grad, rtol=1e-10, atol=1e-10)
        if guide_reference is not None:
            reference_guide_grad, _ = seeded(seed, elbo(guide_reference[0], guide_reference[1])(ppca, guide), x)
            assert torch.allclose(guide_grad, reference_guide_grad, rtol=1e-10, atol=1e-10)
        else:  # DReG and STL change the guide's gradient draw by draw (not only in its mean)
            reference_guide_grad, _ = seeded(seed, elbo(model_reference[0], K)(ppca, guide), x)
            assert (guide_grad - reference_guide_grad).abs().max() > 1e-3


def test_gradients_are_routed_through_every_latent_layer():
    """A guide whose second layer depends on its first (--model hvae: q(z1|x) q(z2|z1)): PIWAE's
    guide gradient is MIWAE's and its model gradient IWAE's, DReG's model gradient IWAE's, draw by
    draw; the weights multiply the gradient once per path, however many sites it passes."""
    config = FitConfig(model="hvae", latent_dim=(3, 2), hidden=(16,))
    vae = build_vae(config, (1, 6, 6)).double()
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).round()
    for seed in range(2):
        piwae_guide, piwae_model = seeded(seed, elbo("piwae")(vae.model, vae.guide), x)
        miwae_guide, _ = seeded(seed, elbo("miwae")(vae.model, vae.guide), x)
        _, iwae_model = seeded(seed, elbo("iwae")(vae.model, vae.guide), x)
        dreg_guide, dreg_model = seeded(seed, elbo("iwae-dreg")(vae.model, vae.guide), x)
        assert torch.allclose(piwae_guide, miwae_guide, rtol=1e-10, atol=1e-10)
        assert torch.allclose(piwae_model, iwae_model, rtol=1e-10, atol=1e-10)
        assert torch.allclose(dreg_model, iwae_model, rtol=1e-10, atol=1e-10)
        assert (piwae_guide - dreg_guide).abs().max() > 1e-4


class IWAEWithSTLWeights(ParticleBound):
    """IWAE with log q's parameters detached and nothing else: the biased estimator of Tucker et
    al. (2019, section 3) that DReG corrects by squaring the weights; here as the negative control."""

    name = "iwae-stl"

    def differentiable_loss(self, model, guide, *args, **kwargs):
        guide_trace = self.guide_trace(guide, args, kwargs)
        model_trace = self.model_trace(model, guide_trace, args, kwargs)
        log_w = trace_log_density(model_trace) - self.detached_log_q(guide, guide_trace, args, kwargs)
        return -iwae_bound(log_w).sum()


def mean_gradient_z_scores(ppca, guide, x, estimator, reference, draws: int) -> torch.Tensor:
    """Per coordinate of the guide's gradient: mean over ``draws`` seeds of (estimator - reference)
    on the same draws, divided by its standard error (paired differences)."""
    differences = torch.stack(
        [seeded(s, estimator(ppca, guide), x)[0] - seeded(s, reference(ppca, guide), x)[0] for s in range(draws)]
    )
    return differences.mean(0) / (differences.std(0) / math.sqrt(draws))


@pytest.mark.parametrize(("name", "reference"), [("iwae-dreg", "iwae"), ("stl", "trace")])
def test_guide_mean_gradient_equals_the_reference_within_monte_carlo_error(ppca, name, reference):
    """Unbiasedness: E[DReG's guide gradient] = E[IWAE's], E[STL's] = E[the ELBO's].

    Each of 40 draws is one loss on 4 images repeated 200 times (800 independent draws of K
    particles per image, summed); the 21 coordinates of the guide's gradient (A 3x6, c, s) give
    z-scores of the mean paired difference. |z| < 4.5 for all of them: a chance failure at the
    fixed seeds would have probability < 21 * 7e-6 for an unbiased estimator. The control, IWAE
    with STL's log q (biased), must reach |z| > 8 somewhere on the same draws: the test can tell.
    """
    guide = AmortizedLinearGaussian.mean_field(ppca)
    with torch.no_grad():  # away from the optimum: gradients of every coordinate
        guide.weight.mul_(0.7)
        guide.scale = 1.5 * guide.scale
    x = ppca.sample(4, torch.Generator().manual_seed(0)).repeat(200, 1)
    z = mean_gradient_z_scores(ppca, guide, x, elbo(name, 5), build_elbo(reference, 5), draws=40)
    assert z.abs().max() < 4.5, z
    if name == "iwae-dreg":
        biased = mean_gradient_z_scores(ppca, guide, x, IWAEWithSTLWeights(5), build_elbo("iwae", 5), draws=40)
        assert biased.abs().max() > 8, biased


# -- any reparameterized guide: the handler detaches parameters, whatever the guide -------------


def score_free_gradient(vae, x):
    """The ELBO's guide gradient minus its score term d log q(z; phi) / d phi at fixed z, computed
    without the handler: log q at the detached draw, through the guide's own distribution."""
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    site = guide_trace.nodes["z"]
    score = site["fn"].log_prob(site["value"].detach()).sum()  # gradient: the score term only
    elbo = trace_log_density(model_trace).sum() - trace_log_density(guide_trace).sum()
    (-(elbo + score)).backward()  # the ELBO's -log q(z; phi) has path and score terms: add the score back
    return torch.cat([p.grad.reshape(-1) for p in vae.guide.parameters()])


@pytest.mark.parametrize("guide", ["diag", "lowrank", "iaf", "maf", "extensions_example:FullCovarianceGuide"])
def test_stl_removes_exactly_the_score_term_for_every_guide(guide):
    """The handler needs nothing of the guide's class: for the built-in guides and a user's own,
    STL's guide gradient equals the ELBO's gradient minus the score term computed directly (float64;
    the IAF's log q at a detached draw inverts its flows: 1e-8)."""
    config = FitConfig(guide=guide, latent_dim=3, hidden=(16,), flow_hidden=8, elbo="stl")
    vae = build_vae(config, (1, 6, 6)).double()
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).round()
    pyro.set_rng_seed(2)
    stl, _ = gradients(build_elbo("stl", 1)(vae.model, vae.guide), x)
    for p in vae.parameters():
        p.grad = None
    pyro.set_rng_seed(2)
    expected = score_free_gradient(vae, x)
    assert torch.allclose(stl, expected, rtol=1e-8, atol=1e-8)
    pyro.set_rng_seed(2)
    trace, _ = gradients(build_elbo("trace", 1)(vae.model, vae.guide), x)
    assert (trace - stl).abs().max() > 1e-4  # the score term was there to remove


def test_detached_parameters_restores_parameters_and_buffers():
    """Inside: no gradient to the parameters, batch norm's statistics free to change; after: the
    same parameter objects and the statistics as they were."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    params = list(net.parameters())
    before = net[1].running_mean.clone()
    with DetachedParameters(net):
        out = net(torch.randn(5, 3))
        assert not out.requires_grad
        assert not torch.equal(net[1].running_mean, before)
    assert list(net.parameters()) == params and all(isinstance(p, torch.nn.Parameter) for p in params)
    assert torch.equal(net[1].running_mean, before)
    assert net(torch.randn(5, 3)).requires_grad


# -- where they cannot apply: clear errors before training ----------------------------------


def test_options_and_refusals():
    with pytest.raises(ConfigError, match="give M with --iw-bounds"):
        check(FitConfig(elbo="piwae", particles=8))
    with pytest.raises(ConfigError, match="--iw-bounds 3 must divide --particles 8"):
        check(FitConfig(elbo="miwae", particles=8, iw_bounds=3))
    with pytest.raises(ConfigError, match="--iw-bounds applies to --elbo miwae or piwae, not iwae"):
        check(FitConfig(elbo="iwae", particles=8, iw_bounds=2))
    with pytest.raises(ConfigError, match="--ciwae-beta applies to --elbo ciwae, not trace"):
        check(FitConfig(ciwae_beta=0.2))
    with pytest.raises(ConfigError, match=r"--ciwae-beta must be in \[0, 1\]"):
        FitConfig(elbo="ciwae", ciwae_beta=1.5)
    with pytest.raises(ConfigError, match="--elbo iwae-dreg .* takes no --beta"):
        check(FitConfig(elbo="iwae-dreg", particles=5, beta=0.5))
    check(FitConfig(elbo="stl", beta=0.5, warmup_epochs=1))  # STL is the ELBO's estimator: beta applies
    for name in ESTIMATORS:  # M2's label is discrete: no reparameterized draw of it
        with pytest.raises(ConfigError, match=f"--elbo {name} differentiates through .* m2's label y is discrete"):
            check(FitConfig(model="m2", elbo=name, particles=4, iw_bounds=2 if name in ("miwae", "piwae") else None))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_a_guide_site_without_rsample_is_refused_by_name(name):
    def model(x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("c", dist.Bernoulli(0.5))

    with pytest.raises(ConfigError, match=f"--elbo {name} needs a reparameterized guide; site 'c'"):
        elbo(name).differentiable_loss(model, guide, torch.zeros(3))


# -- the command line: training, and a resume that continues exactly ------------------------


def test_dreg_run_resumes_exactly(mnist_dataset, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    options = dict(elbo="iwae-dreg", particles=3, train_size=200, epochs=2)
    assert fit_main(cli_args(mnist_dataset, straight, **options)) == 0
    assert fit_main(cli_args(mnist_dataset, resumed, **{**options, "epochs": 1})) == 0
    assert fit_main(["--resume", str(resumed), "--epochs", "2"]) == 0
    a = torch.load(straight / "last.pt", weights_only=True)["networks"]
    b = torch.load(resumed / "last.pt", weights_only=True)["networks"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


@pytest.mark.parametrize(
    "options",
    [
        dict(elbo="stl", particles=2, precision="bf16-mixed"),
        dict(elbo="piwae", particles=4, iw_bounds=2, guide="iaf", flow_hidden=16),
        dict(elbo="ciwae", particles=3, ciwae_beta=0.2, model="hvae", latent_dim=(4, 2)),
    ],
    ids=["stl-bf16", "piwae-iaf", "ciwae-hvae"],
)
def test_the_cli_trains_with_the_estimators(mnist_dataset, tmp_path, options):
    assert fit_main(cli_args(mnist_dataset, tmp_path / "run", train_size=200, epochs=1, **options)) == 0
    assert (tmp_path / "run" / "last.pt").exists()
