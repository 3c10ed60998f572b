"""Likelihoods, priors, nets, model and guide: shapes, known log-densities, every registered entry."""

import math

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae.config import FitConfig
from pyro_vae.engine.optim import build_optimizer
from pyro_vae.errors import ConfigError
from pyro_vae.models import LIKELIHOODS, PRIORS
from pyro_vae.nets import DECODERS, ENCODERS, NetSpec
from pyro_vae.objectives import ELBOS, build_elbo, elbo_takes
from pyro_vae.variants import build_vae

IMAGE_SHAPE = (1, 28, 28)
PIXELS = math.prod(IMAGE_SHAPE)


def make_likelihood(name, scale=0.1):
    return LIKELIHOODS.build(name, IMAGE_SHAPE, FitConfig(likelihood=name, gaussian_scale=scale))


def zero_params(likelihood, batch=3):
    return torch.zeros(batch, likelihood.params_per_pixel * IMAGE_SHAPE[0], *IMAGE_SHAPE[1:])


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_every_likelihood_has_image_event_shape_and_means_in_unit_interval(name):
    likelihood = make_likelihood(name)
    d = likelihood(zero_params(likelihood))
    assert d.batch_shape == (3,) and d.event_shape == IMAGE_SHAPE
    x = torch.rand(3, *IMAGE_SHAPE).round()
    assert d.log_prob(x).shape == (3,) and torch.isfinite(d.log_prob(x)).all()
    mean = likelihood.mean(zero_params(likelihood))
    assert mean.shape == (3, *IMAGE_SHAPE) and mean.min() >= 0 and mean.max() <= 1


def test_known_log_densities_at_zero_logits():
    x_binary = torch.rand(2, *IMAGE_SHAPE).round()
    bern = make_likelihood("bernoulli")
    # Bernoulli(1/2) per pixel: log p(x) = -784 log 2 whatever x is
    assert torch.allclose(bern(zero_params(bern, 2)).log_prob(x_binary), torch.full((2,), -PIXELS * math.log(2)))
    cb = make_likelihood("continuous-bernoulli")
    # ContinuousBernoulli with logits 0 is Uniform(0, 1): log p(x) = 0
    assert torch.allclose(cb(zero_params(cb, 2)).log_prob(torch.rand(2, *IMAGE_SHAPE)), torch.zeros(2), atol=1e-3)
    sigma = 0.2
    gauss = make_likelihood("gaussian", scale=sigma)
    x_half = torch.full((2, *IMAGE_SHAPE), 0.5)  # at the mean sigmoid(0) = 1/2
    expected = -PIXELS * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
    assert torch.allclose(gauss(zero_params(gauss, 2)).log_prob(x_half), torch.full((2,), expected), rtol=1e-5)
    learned = make_likelihood("gaussian-pixel-scale", scale=sigma)
    assert torch.allclose(learned(zero_params(learned, 2)).log_prob(x_half), torch.full((2,), expected), rtol=1e-4)


def test_bernoulli_likelihood_equals_pyros_bernoulli_in_value_and_gradient():
    """PixelBernoulli negates torch's -BCE in place: the same log p(x|z) and gradient, bit for bit,
    and expand / validation behave as Pyro's Bernoulli."""
    torch.manual_seed(0)
    logits = (3 * torch.randn(5, *IMAGE_SHAPE)).requires_grad_()
    x = torch.rand(5, *IMAGE_SHAPE).round()
    ours = make_likelihood("bernoulli")(logits).log_prob(x)
    pyros = pyro.distributions.Bernoulli(logits=logits).to_event(3).log_prob(x)
    assert torch.equal(ours, pyros)
    assert torch.equal(torch.autograd.grad(ours.sum(), logits)[0], torch.autograd.grad(pyros.sum(), logits)[0])
    expanded = make_likelihood("bernoulli")(logits).expand((2, 5))
    assert torch.equal(expanded.log_prob(x), pyros.detach().expand(2, 5))
    with pytest.raises(ValueError, match="support"):
        make_likelihood("bernoulli")(logits.detach()).base_dist.log_prob(torch.full_like(x, 0.5))


def test_bernoulli_log_prob_negates_each_image_not_each_pixel():
    """log p(x|z) is minus the summed cross-entropy, negated once per image: no pass over the
    pixels beyond torch's own BCE (an evaluation chunk holds particles x images of them)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Negations(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.sizes = []  # numel of every negation's result

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket in (torch.ops.aten.neg, torch.ops.aten.neg_):
                self.sizes.append(out.numel())
            return out

    logits = 3 * torch.randn(5, *IMAGE_SHAPE)
    x = torch.rand(5, *IMAGE_SHAPE).round()
    with Negations() as negations:
        ours = make_likelihood("bernoulli")(logits).log_prob(x)
    assert negations.sizes == [5]
    assert torch.equal(ours, pyro.distributions.Bernoulli(logits=logits).to_event(3).log_prob(x))


def test_bernoulli_refuses_grey_scale_data_and_everyone_refuses_out_of_range():
    grey = torch.rand(4, *IMAGE_SHAPE)
    with pytest.raises(ConfigError, match="bernoulli likelihood needs binary pixels.*--binarize dynamic"):
        make_likelihood("bernoulli").check_data(grey, "none")
    make_likelihood("bernoulli").check_data(grey, "dynamic")  # binarized on the fly: fine
    make_likelihood("continuous-bernoulli").check_data(grey, "none")
    with pytest.raises(ConfigError, match=r"pixel values in \[0, 2\], outside \[0, 1\]"):
        out_of_range = torch.zeros(2, *IMAGE_SHAPE)
        out_of_range[0, 0, 0, 0] = 2.0
        make_likelihood("gaussian").check_data(out_of_range, "none")


@pytest.mark.parametrize("name", PRIORS.names())
def test_every_prior_is_a_distribution_over_d_dimensional_z(name):
    config = FitConfig(prior=name, latent_dim=5, hidden=(8,), prior_components=3)
    vae = build_vae(config, IMAGE_SHAPE)
    prior = vae.model.prior
    p = prior()
    assert p.event_shape == (5,)
    z = p.sample((7,))
    assert z.shape == (7, 5) and p.log_prob(z).shape == (7,)


def test_standard_normal_prior_log_density_at_zero():
    p = build_vae(FitConfig(latent_dim=3, hidden=(8,)), IMAGE_SHAPE).model.prior()
    assert p.log_prob(torch.zeros(3)).item() == pytest.approx(-1.5 * math.log(2 * math.pi))


@pytest.mark.parametrize("net", ENCODERS.names())
def test_nets_map_shapes(net):
    spec = NetSpec(IMAGE_SHAPE, latent_dim=6, hidden=(40, 24))
    encoder = ENCODERS.build(net, spec)
    decoder = DECODERS.build(net, spec, 2)
    assert encoder(torch.rand(5, *IMAGE_SHAPE)).shape == (5, encoder.feature_dim)
    assert decoder(torch.randn(5, 6)).shape == (5, 2, 28, 28)


def test_conv_nets_need_images_of_at_least_8x8():
    with pytest.raises(ConfigError, match="need images of at least 8x8; got 6x6. Use --net mlp"):
        ENCODERS.build("conv", NetSpec((1, 6, 6), 2, (16,)))
    with pytest.raises(ConfigError, match=r"got 1x20 \(flat vectors\). Use --net mlp"):
        DECODERS.build("conv", NetSpec((1, 1, 20), 2, (16,)), 1)


@pytest.mark.parametrize("net", ENCODERS.names())
@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
@pytest.mark.parametrize("elbo", ELBOS.names())
def test_every_net_likelihood_and_elbo_takes_a_finite_step(net, likelihood, elbo):
    bounds = 2 if elbo_takes(elbo, "iw_bounds") else None  # miwae, piwae: M groups of --particles / M
    config = FitConfig(
        net=net, likelihood=likelihood, elbo=elbo, latent_dim=3, hidden=(16,), particles=2, iw_bounds=bounds
    )
    vae = build_vae(config, IMAGE_SHAPE)
    loss_fn = build_elbo(elbo, config.particles, config)(vae.model, vae.guide)  # Pyro's ELBO module
    optimizer = build_optimizer(loss_fn.parameters(), config.lr)  # one torch Adam over all of them
    assert {id(p) for p in loss_fn.parameters()} == {id(p) for p in vae.parameters()}
    x = torch.rand(4, *IMAGE_SHAPE).round()
    before = {k: v.detach().clone() for k, v in vae.state_dict().items()}
    loss = loss_fn(x)
    loss.backward()
    optimizer.step()
    assert loss.shape == () and torch.isfinite(loss)
    changed = [k for k, v in vae.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("model.decoder") for k in changed)
    assert any(k.startswith("guide.encoder") for k in changed)


def test_model_and_guide_sites_follow_the_interface():
    vae = build_vae(FitConfig(latent_dim=4, hidden=(16,)), IMAGE_SHAPE)
    x = torch.rand(3, *IMAGE_SHAPE).round()
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    assert guide_trace.nodes["z"]["fn"].event_shape == (4,)
    assert guide_trace.nodes["z"]["fn"].has_rsample  # the reparameterization trick
    assert model_trace.nodes["x"]["is_observed"]
    assert model_trace.nodes["x"]["fn"].event_shape == IMAGE_SHAPE
    for site in ("z", "x"):  # every sample site sits in the data plate
        assert [f.name for f in model_trace.nodes[site]["cond_indep_stack"]] == ["data"]


def test_two_vaes_do_not_share_parameters():
    config = FitConfig(latent_dim=2, hidden=(8,), prior="learned", likelihood="gaussian-pixel-scale")
    a, b = build_vae(config, IMAGE_SHAPE), build_vae(config, IMAGE_SHAPE)
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, *IMAGE_SHAPE).round()
    loss_fn = build_elbo("trace")(a.model, a.guide)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=0.1)
    loss_fn(x).backward()
    optimizer.step()
    assert len(pyro.get_param_store()) == 0  # module-local parameters: nothing global
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert not torch.equal(pa, pb), name  # a moved, b did not


@pytest.mark.parametrize("model", ["vae", "cvae", "m2", "hvae"])
def test_every_model_kind_trains_a_step_through_its_variant(model, mnist_dataset, tmp_path, one_thread):
    from pyro_vae.engine import Trainer
    from pyro_vae.variants import VARIANTS

    assert set(VARIANTS.names()) == {"vae", "cvae", "m2", "hvae"}  # a new kind needs a line here
    config = FitConfig(
        model=model,
        train_size=60,
        eval_size=10,
        latent_dim=(2, 2) if model == "hvae" else 2,
        hidden=(16,),
        batch_size=20,
        labels=10 if model == "m2" else None,
        out=str(tmp_path),
    )
    trainer = Trainer(config, mnist_dataset, tmp_path, "cpu", log=lambda _: None)
    before = {k: v.clone() for k, v in trainer.vae.state_dict().items()}
    loss = trainer.train_step(next(iter(trainer.variant.training_batches())))
    assert torch.isfinite(loss)
    changed = [k for k, v in trainer.vae.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("model.decoder") for k in changed) and any(k.startswith("guide.") for k in changed)


def test_vae_api_shapes():
    vae = build_vae(FitConfig(latent_dim=2, hidden=(8,)), IMAGE_SHAPE)
    x = torch.rand(5, *IMAGE_SHAPE).round()
    assert vae.encode(x).event_shape == (2,)
    assert vae.decode(torch.zeros(5, 2)).event_shape == IMAGE_SHAPE
    assert vae.sample(6).shape == (6, *IMAGE_SHAPE)
    assert vae.reconstruct(x).shape == x.shape
