"""The hierarchical VAE (Burda et al.'s two stochastic layers and deeper) and the user-model example
files in examples/: site shapes inside the data plate, the paper's layer sizes, per-sample draws,
finite losses with gradients to every parameter, training that lowers the loss, enumeration."""

import importlib.util
import math
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from torch import nn

from pyro_vae.errors import ConfigError
from pyro_vae.guides import (
    AmortizedIAF,
    AmortizedLowRankNormal,
    HierarchicalGuide,
    build_burda_two_layer,
    build_hierarchical_vae,
)
from pyro_vae.models import BernoulliLikelihood, GaussianLayer, HierarchicalVAEModel
from pyro_vae.models.hierarchical import hidden_per_gap

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = (1, 8, 8)
B = 5


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def binary_images(n, shape=SMALL):
    return torch.rand(n, *shape).round()


BOTTOMS = {
    "diag": None,
    "lowrank": lambda encoder, d: AmortizedLowRankNormal(encoder, d, rank=2),
    "iaf": lambda encoder, d: AmortizedIAF(encoder, d, flow_layers=2, flow_hidden=16),
}


def small_hvae(latent_dims=(6, 4, 3), hidden=(16, 16), bottom="diag"):
    kwargs = {} if BOTTOMS[bottom] is None else {"bottom": BOTTOMS[bottom]}
    return build_hierarchical_vae(SMALL, latent_dims, hidden, BernoulliLikelihood(), **kwargs)


def pairs():
    """(model, guide, latent widths by site) of each kind under test."""
    model, guide = small_hvae()
    burda_model, burda_guide = build_burda_two_layer(SMALL)
    example = load_example("two_layer_vae").TwoLayerVAE(SMALL, latent_dims=(6, 3), hidden=(16, 16))
    return {
        "three-layer": (model, guide, {"z1": 6, "z2": 4, "z3": 3}),
        "burda": (burda_model, burda_guide, {"z1": 100, "z2": 50}),
        "example": (example.model, example.guide, {"z1": 6, "z2": 3}),
    }


@pytest.mark.parametrize("kind", ["three-layer", "burda", "example"])
def test_every_site_scores_one_number_per_image_inside_the_data_plate(kind):
    model, guide, widths = pairs()[kind]
    x = binary_images(B)
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    for trace, sites in ((guide_trace, set(widths)), (model_trace, {*widths, "x"})):
        trace.compute_log_prob()
        samples = {
            name: trace.nodes[name] for name in trace.stochastic_nodes + trace.observation_nodes if name != "data"
        }  # the plate's own node
        assert set(samples) == sites
        for name, site in samples.items():
            assert site["fn"].batch_shape == (B,), name
            assert site["log_prob"].shape == (B,), name
            assert [f.name for f in site["cond_indep_stack"]] == ["data"], name
            event = SMALL if name == "x" else (widths[name],)
            assert site["fn"].event_shape == event, name
            assert site["value"].shape == (B, *event), name


def linear_sizes(module):
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_burda_builder_has_exactly_the_papers_layers():
    model, guide = build_burda_two_layer((1, 28, 28))
    # p(x | z1): z1 -100-100- 784 logits;  p(z1 | z2): z2 -50-50- loc, scale of z1
    assert linear_sizes(model.decoder) == [(100, 100), (100, 100), (100, 784)]
    assert linear_sizes(model.conditionals[0]) == [(50, 50), (50, 50), (50, 100), (50, 100)]
    # q(z1 | x): x -100-100- loc, scale of z1;  q(z2 | z1): z1 -50-50- loc, scale of z2
    assert linear_sizes(guide.bottom) == [(784, 100), (100, 100), (100, 100), (100, 100)]
    assert linear_sizes(guide.upward[0]) == [(100, 50), (50, 50), (50, 50), (50, 50)]
    assert len(linear_sizes(model)) == 7 and len(linear_sizes(guide)) == 8
    activations = [
        type(m) for m in [*model.modules(), *guide.modules()] if isinstance(m, (nn.Tanh, nn.ReLU, nn.Softplus))
    ]
    assert activations == [nn.Tanh] * 8  # two per deterministic stack, four stacks
    assert model.latent_dims == (100, 50) and model.latent_sites == guide.latent_sites == ("z1", "z2")
    assert isinstance(model.top_prior(), pyro.distributions.Independent)
    assert torch.equal(model.top_prior().base_dist.scale, torch.ones(50))  # p(z2) = N(0, I)
    # Glorot initialization: zero biases, uniform weights within sqrt(6 / (fan_in + fan_out))
    for layer in [m for m in [*model.modules(), *guide.modules()] if isinstance(m, nn.Linear)]:
        assert not layer.bias.any()
        assert layer.weight.abs().max() <= math.sqrt(6 / (layer.in_features + layer.out_features))


def test_generic_widths_halve_the_hidden_layers_between_stochastic_layers():
    assert hidden_per_gap((32, 32), 2) == ((32, 32), (16, 16))
    assert hidden_per_gap((100, 100), 2) == ((100, 100), (50, 50))
    assert hidden_per_gap(((8,), (5, 4)), 2) == ((8,), (5, 4))
    model, guide = build_hierarchical_vae(SMALL, (16, 8), (32, 32), BernoulliLikelihood())
    assert linear_sizes(model.decoder) == [(16, 32), (32, 32), (32, 64)]
    assert linear_sizes(model.conditionals[0]) == [(8, 16), (16, 16), (16, 16), (16, 16)]
    assert linear_sizes(guide.upward[0]) == [(16, 16), (16, 16), (16, 8), (16, 8)]
    with pytest.raises(ConfigError, match="3 stochastic layers have 3 gaps"):
        hidden_per_gap(((8,), (4,)), 3)
    with pytest.raises(ConfigError, match="hidden must be widths"):
        hidden_per_gap((), 2)


def test_mismatched_layers_are_refused_with_the_expected_sizes():
    decoder = nn.Linear(4, 64)
    with pytest.raises(ConfigError, match=r"p\(z1 \| z2\) must map 3 to 4 units, got 3 -> 5"):
        HierarchicalVAEModel((4, 3), decoder, BernoulliLikelihood(), [GaussianLayer(3, (8,), 5)])
    with pytest.raises(ConfigError, match="2 stochastic layers need 1 conditionals"):
        HierarchicalVAEModel((4, 3), decoder, BernoulliLikelihood(), [])
    _, guide = small_hvae()
    with pytest.raises(ConfigError, match=r"q\(z2 \| z1\) gives 4 units but q\(z3 \| z2\) reads 5"):
        HierarchicalGuide(guide.bottom, [GaussianLayer(6, (8,), 4), GaussianLayer(5, (8,), 3)])


def test_sampling_draws_every_layer_per_sample():
    model, _ = small_hvae()
    latents = model.sample_latents(7)
    assert {k: v.shape for k, v in latents.items()} == {"z1": (7, 6), "z2": (7, 4), "z3": (7, 3)}
    for z in latents.values():  # no two samples share a draw at any layer
        assert torch.cdist(z, z).add(torch.eye(7)).min() > 0
    # the model with x None samples the image too, every site once per sample of the plate
    with pyro.plate("data", 7, dim=-1):
        trace = poutine.trace(model).get_trace(None)
    assert trace.nodes["x"]["value"].shape == (7, *SMALL) and not trace.nodes["x"]["is_observed"]
    z3 = trace.nodes["z3"]["value"]
    assert z3.shape == (7, 3) and torch.cdist(z3, z3).add(torch.eye(7)).min() > 0
    assert model.mean_image(latents["z1"]).shape == (7, *SMALL)
    assert model.decode(latents["z1"]).batch_shape == (7,)
    example = load_example("two_layer_vae").TwoLayerVAE(SMALL, latent_dims=(6, 3), hidden=(16, 16))
    drawn = example.sample_latents(7)
    assert drawn["z2"].shape == (7, 3) and torch.cdist(drawn["z2"], drawn["z2"]).add(torch.eye(7)).min() > 0
    assert example.mean_image(drawn["z1"]).shape == (7, *SMALL)


@pytest.mark.parametrize("bottom", list(BOTTOMS))
def test_posterior_means_propagate_the_means_layer_by_layer(bottom):
    _, guide = small_hvae(bottom=bottom)
    x = binary_images(B)
    means = guide.posterior_means(x)
    assert {k: v.shape for k, v in means.items()} == {"z1": (B, 6), "z2": (B, 4), "z3": (B, 3)}
    q1 = guide.distribution(x)
    assert q1.batch_shape == (B,) and q1.event_shape == (6,)
    if bottom != "iaf":
        assert torch.allclose(means["z1"], q1.mean)
    assert torch.allclose(means["z2"], guide.upward[0](means["z1"]).base_dist.loc)
    assert torch.allclose(means["z3"], guide.upward[1](means["z2"]).base_dist.loc)


def assert_gradients_reach_every_parameter(loss_module, x):
    loss = loss_module(x)
    assert torch.isfinite(loss)
    loss.backward()
    params = dict(loss_module.named_parameters())
    assert params
    for name, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("bottom", list(BOTTOMS))
def test_trace_elbo_is_finite_with_gradients_to_every_parameter(bottom):
    model, guide = small_hvae(bottom=bottom)
    assert_gradients_reach_every_parameter(Trace_ELBO()(model, guide), binary_images(B))


def test_the_examples_give_finite_losses_with_gradients_to_every_parameter():
    example = load_example("two_layer_vae").TwoLayerVAE(SMALL, latent_dims=(6, 3), hidden=(16, 16))
    assert_gradients_reach_every_parameter(Trace_ELBO()(example.model, example.guide), binary_images(B))
    gmm = load_example("gmm_vae").GMMVAE(SMALL, latent_dim=4, components=3, hidden=(16,))
    loss = TraceEnum_ELBO(max_plate_nesting=1)(gmm.model, gmm.guide)
    assert_gradients_reach_every_parameter(loss, binary_images(B))
    names = {name for name, _ in loss.named_parameters()}
    assert {"model.logits_unconstrained", "model.locs_unconstrained", "model.scales_unconstrained"} <= names


def clustered_binary_images(n, prototypes=4, flip=0.05):
    """Random binary images near a few random prototypes: structure a model can learn."""
    centres = binary_images(prototypes)
    x = centres[torch.arange(n) % prototypes]
    return torch.where(torch.rand_like(x) < flip, 1 - x, x)


def adam_losses(model, guide, elbo, steps=60):
    x = clustered_binary_images(32)
    loss_module = elbo(model, guide)
    loss_module(x)  # create lazily built parameters before the optimizer sees them
    optimizer = torch.optim.Adam(loss_module.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_module(x)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ["three-layer", "example", "gmm"])
def test_a_few_adam_steps_lower_the_loss(kind):
    if kind == "three-layer":
        model, guide = small_hvae()
        elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    elif kind == "example":
        vae = load_example("two_layer_vae").TwoLayerVAE(SMALL, latent_dims=(6, 3), hidden=(16, 16))
        model, guide = vae.model, vae.guide
        elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    else:
        vae = load_example("gmm_vae").GMMVAE(SMALL, latent_dim=4, components=3, hidden=(16,))
        model, guide = vae.model, vae.guide
        elbo = TraceEnum_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    losses = adam_losses(model, guide, elbo)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)  # seen: a fall of 30-65%


def test_the_gmm_example_enumerates_the_cluster_in_the_model():
    gmm = load_example("gmm_vae").GMMVAE(SMALL, latent_dim=4, components=3, hidden=(16,))
    x = binary_images(B)
    guide_trace = poutine.trace(gmm.guide).get_trace(x)
    assert [n for n in guide_trace.stochastic_nodes if n != "data"] == ["z"]
    enumerated = poutine.enum(gmm.model, first_available_dim=-2)
    trace = poutine.trace(poutine.replay(enumerated, trace=guide_trace)).get_trace(x)
    trace.compute_log_prob()
    c = trace.nodes["c"]
    assert c["infer"]["enumerate"] == "parallel"
    assert c["value"].shape == (3, 1) and torch.equal(c["value"].flatten(), torch.arange(3))
    assert trace.nodes["z"]["log_prob"].shape == (3, B)  # log N(z_i; mu_c, sigma_c^2) per cluster
    assert trace.nodes["x"]["log_prob"].shape == (B,)
    # the enumerated ELBO equals the one with log p(z) = log sum_c pi_c N(z; mu_c, sigma_c^2)
    pyro.set_rng_seed(1)
    enum_loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(gmm.model, gmm.guide, x)
    pyro.set_rng_seed(1)
    z_trace = poutine.trace(gmm.guide).get_trace(x)
    z = z_trace.nodes["z"]["value"]
    m = gmm.model
    log_pi = torch.log_softmax(m.logits, -1)
    components = pyro.distributions.Normal(m.locs, m.scales).to_event(1)
    log_pz = torch.logsumexp(log_pi + components.log_prob(z.unsqueeze(-2)), dim=-1)  # (B,)
    log_px = m.pixels(z).log_prob(x)
    log_q = z_trace.nodes["z"]["fn"].log_prob(z)
    assert torch.allclose(enum_loss, -(log_px + log_pz - log_q).sum(), rtol=1e-5)


def test_one_stochastic_layer_is_the_plain_vae():
    """L = 1: p(z1) p(x | z1) with the same decoder scores exactly as VAEModel's p(z) p(x | z)."""
    from pyro_vae.models import StandardNormalPrior, VAEModel

    model, guide = build_hierarchical_vae(SMALL, (4,), (16,), BernoulliLikelihood())
    assert model.latent_sites == guide.latent_sites == ("z1",) and len(guide.upward) == 0
    plain = VAEModel(StandardNormalPrior(4), model.decoder, model.likelihood)
    x, z = binary_images(B), torch.randn(B, 4)
    ours = poutine.trace(poutine.condition(model, data={"z1": z})).get_trace(x).log_prob_sum()
    theirs = poutine.trace(poutine.condition(plain, data={"z": z})).get_trace(x).log_prob_sum()
    assert torch.allclose(ours, theirs)


def test_importance_weighted_evaluation_weighs_every_layer():
    """The evaluator's ELBO on its own samples (all sites replayed into the model) agrees with
    Trace_ELBO, and its log p_K(x) lies above it."""
    from pyro_vae.evaluation.iwae import importance_weighted_log_px

    model, guide = small_hvae()
    x = binary_images(4)
    estimate = importance_weighted_log_px(model, guide, x, k=400, latent_site="z1")
    assert estimate.log_px.shape == (4,) and (estimate.log_px > estimate.elbo).all()
    elbo = Trace_ELBO(num_particles=400, vectorize_particles=True, max_plate_nesting=1)
    trace_elbo = -elbo.loss(model, guide, x) / 4
    assert abs(estimate.elbo.mean().item() - trace_elbo) < 0.5
    assert torch.allclose(estimate.z_mean.float(), guide.distribution(x).mean, atol=1e-5)
