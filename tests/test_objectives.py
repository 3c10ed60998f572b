"""The ELBO terms against closed forms: analytic KL, Monte-Carlo KL, mini-batch scaling, beta."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.nn import PyroModule

from pyro_vae.config import FitConfig
from pyro_vae.objectives import ELBOS, Scaled, beta_at, build_elbo, elbo_terms
from pyro_vae.variants import build_vae, check

IMAGE_SHAPE = (1, 28, 28)


@pytest.fixture
def vae_and_batch():
    vae = build_vae(FitConfig(latent_dim=4, hidden=(32,)), IMAGE_SHAPE)
    x = torch.bernoulli(torch.rand(6, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(1)))
    return vae, x


def closed_form_kl(loc, scale):
    # KL(N(mu, diag s^2) || N(0, I)) = 1/2 sum_d (mu^2 + s^2 - log s^2 - 1)      (B,)
    return 0.5 * (loc**2 + scale**2 - torch.log(scale**2) - 1).sum(-1)


def guide_params(vae, x):
    q = vae.guide.distribution(x)
    return q.base_dist.loc.detach(), q.base_dist.scale.detach()


def test_meanfield_kl_term_equals_closed_form(vae_and_batch):
    vae, x = vae_and_batch
    loc, scale = guide_params(vae, x)
    # Hiding the observed site leaves only the latent terms: TraceMeanField's loss is sum_i KL_i.
    model_without_x = poutine.block(vae.model, hide=["x"])
    loss = TraceMeanField_ELBO(max_plate_nesting=1).loss(model_without_x, vae.guide, x)
    expected = closed_form_kl(loc, scale).sum().item()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert expected > 0.1  # an untrained encoder is far from the prior: the check is not 0 == 0


def test_monte_carlo_kl_agrees_with_closed_form(vae_and_batch):
    vae, x = vae_and_batch
    loc, scale = guide_params(vae, x)
    particles = 20_000
    model_without_x = poutine.block(vae.model, hide=["x"])
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    mc = elbo.loss(model_without_x, vae.guide, x)  # E_q[log q(z|x) - log p(z)], summed over images
    # Its standard error, from the spread of log q - log p over fresh samples of the same q.
    q = torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)
    p = torch.distributions.Independent(torch.distributions.Normal(torch.zeros_like(loc), 1.0), 1)
    z = q.sample((particles,))
    per_particle = (q.log_prob(z) - p.log_prob(z)).sum(-1)  # (particles,)
    standard_error = per_particle.std().item() / math.sqrt(particles)
    expected = closed_form_kl(loc, scale).sum().item()
    assert abs(mc - expected) < 5 * standard_error, (mc, expected, standard_error)


@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_minibatch_loss_is_data_set_scaled_per_image_terms(vae_and_batch, beta):
    vae, x = vae_and_batch
    num_data = 600  # pretend the batch of 6 is drawn from 600 images
    pyro.set_rng_seed(3)
    loss = TraceMeanField_ELBO(max_plate_nesting=1).loss(
        Scaled(vae.model), Scaled(vae.guide), x, None, num_data / x.shape[0], beta
    )
    pyro.set_rng_seed(3)  # the same z for the per-image terms
    terms = elbo_terms(vae.model, vae.guide, x)
    # loss = -(N / B) sum_i [log p(x_i|z_i) - beta KL_i]
    expected = -(num_data / x.shape[0]) * (terms["recon"] - beta * terms["kl"]).sum().item()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert terms["recon"].shape == (6,) and terms["kl"].shape == (6,)


class TinyModel(PyroModule):
    """p(z) = N(0, 1), p(x | z) = N(z, 1), one number per data point."""

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)


class TinyGuide(PyroModule):
    """q(z | x) = N(x / 2, 0.5^2)."""

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x / 2, 0.5))


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_the_loss_module_takes_the_scales_as_arguments(elbo, beta):
    """loss(x, y, N / B, beta) = -(N / B) sum_i [log p(x_i|z_i) - beta KL_i], by hand on a tiny
    model (KL analytic for meanfield, log q(z|x) - log p(z) for trace), and with beta = 1 the
    plain ELBO times N / B."""
    x = torch.tensor([0.5, -1.0, 2.0])
    num_data = 300
    loss = build_elbo(elbo)(Scaled(TinyModel()), Scaled(TinyGuide()))
    pyro.set_rng_seed(0)
    scaled = float(loss(x, None, num_data / 3, beta))
    pyro.set_rng_seed(0)  # the same z
    z = poutine.trace(TinyGuide()).get_trace(x).nodes["z"]["value"]
    recon = dist.Normal(z, 1.0).log_prob(x)  # log p(x|z)   (B,)
    if elbo == "meanfield":
        # KL(N(m, s^2) || N(0, 1)) = log(1 / s) + (s^2 + m^2) / 2 - 1/2     (B,)
        kl = math.log(1 / 0.5) + (0.25 + (x / 2) ** 2) / 2 - 0.5
    else:
        kl = dist.Normal(x / 2, 0.5).log_prob(z) - dist.Normal(0.0, 1.0).log_prob(z)
    assert scaled == pytest.approx(float(-(num_data / 3) * (recon - beta * kl).sum()), rel=1e-6)
    if beta == 1.0:
        pyro.set_rng_seed(0)
        plain = float(build_elbo(elbo)(TinyModel(), TinyGuide())(x))
        assert scaled == pytest.approx(num_data / 3 * plain, rel=1e-6)


def test_elbo_terms_are_per_image(vae_and_batch):
    vae, x = vae_and_batch
    pyro.set_rng_seed(5)
    together = elbo_terms(vae.model, vae.guide, x)
    pyro.set_rng_seed(5)
    first = elbo_terms(vae.model, vae.guide, x[:1])
    # the analytic KL of image 0 does not depend on the other images of the batch
    assert together["kl"][0].item() == pytest.approx(first["kl"][0].item(), rel=1e-5)
    assert torch.allclose(together["elbo"], together["recon"] - together["kl"])


def test_beta_schedule():
    assert beta_at(0, 100, 1.0, 0) == 1.0
    assert beta_at(0, 100, 1.0, 2) == pytest.approx(1 / 200)
    assert beta_at(99, 100, 1.0, 2) == pytest.approx(0.5)
    assert beta_at(199, 100, 1.0, 2) == pytest.approx(1.0)
    assert beta_at(10_000, 100, 4.0, 2) == 4.0


def test_build_elbo_rejects_unknown_and_bad_particles():
    from pyro_vae.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown ELBO 'nope'; choose one of: " + ", ".join(ELBOS.names())):
        build_elbo("nope")
    with pytest.raises(ConfigError, match="--particles must be at least 1"):
        build_elbo("trace", 0)


def test_iwae_objective_equals_renyi_alpha_0_without_scaling(vae_and_batch):
    from pyro.infer import RenyiELBO

    vae, x = vae_and_batch
    pyro.set_rng_seed(7)
    ours = build_elbo("iwae", 5).loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(7)  # RenyiELBO draws the same vectorized particles
    renyi = RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    assert ours == pytest.approx(renyi.loss(vae.model, vae.guide, x), rel=1e-6)


def test_iwae_objective_scales_the_bound_not_the_log_weights(vae_and_batch):
    vae, x = vae_and_batch
    num_data = 600
    pyro.set_rng_seed(8)
    scaled = build_elbo("iwae", 5).loss(Scaled(vae.model), Scaled(vae.guide), x, None, num_data / x.shape[0], 1.0)
    pyro.set_rng_seed(8)
    plain = build_elbo("iwae", 5).loss(vae.model, vae.guide, x)
    assert scaled == pytest.approx(num_data / x.shape[0] * plain, rel=1e-6)


def test_iwae_with_one_particle_is_the_elbo(vae_and_batch):
    vae, x = vae_and_batch
    pyro.set_rng_seed(9)
    iwae = build_elbo("iwae", 1).loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(9)
    elbo = Trace_ELBO(max_plate_nesting=1).loss(vae.model, vae.guide, x)
    assert iwae == pytest.approx(elbo, rel=1e-6)


def test_iwae_bound_tightens_with_k_on_average(vae_and_batch):
    vae, x = vae_and_batch
    pyro.set_rng_seed(10)
    mean_loss = {k: sum(build_elbo("iwae", k).loss(vae.model, vae.guide, x) for _ in range(20)) / 20 for k in (1, 50)}
    assert mean_loss[50] < mean_loss[1]  # -L_50 < -L_1: the K=50 bound is tighter


def test_iwae_refuses_beta_and_warmup():
    from pyro_vae.errors import ConfigError

    with pytest.raises(ConfigError, match="--elbo iwae .* takes no --beta or --warmup-epochs"):
        check(FitConfig(elbo="iwae", particles=5, beta=0.5))
