"""The VampPrior's log p(z): for a diagonal guide in closed form by matrix products, equal to the
elementwise densities in value and gradient; for other guides in blocks with recomputation, exactly
the unblocked values and gradients; and the VampPrior x IAF pair at its default sizes trains under a
memory limit of a few GB."""

import math
import os
import subprocess
import sys
import textwrap

import pyro.distributions as dist
import pytest
import torch

import pyro_vae.models.priors as priors
from pyro_vae.config import FitConfig
from pyro_vae.errors import ConfigError
from pyro_vae.guides import flows_see_x
from pyro_vae.models.priors import VampMixture, diagonal_normal_log_densities
from pyro_vae.variants import build_vae

IMAGE_SHAPE = (1, 28, 28)


def small_vamp(guide, components=7, flow_context="x"):
    """A small VampPrior VAE; its flows (iaf, maf) conditioned on x unless ``flow_context="none"``
    (the VampPrior's default)."""
    config = FitConfig(
        prior="vamp",
        guide=guide,
        latent_dim=4,
        hidden=(32,),
        prior_components=components,
        flow_hidden=16,
        flow_context=flow_context,
    )
    vae = build_vae(config, IMAGE_SHAPE)
    return vae, vae.model.prior


def log_p_and_grads(vae, prior, z, block_bytes):
    """log p(z) summed, and its gradients with respect to z, the pseudo-inputs and the guide."""
    for p in vae.parameters():
        p.grad = None
    z = z.clone().requires_grad_()
    features = vae.guide.features(prior.pseudo_inputs())
    mixture = VampMixture(vae.guide, features, z.shape[-1], block_bytes=block_bytes)
    log_p = mixture.log_prob(z)
    log_p.sum().backward()
    grads = {name: p.grad.clone() for name, p in vae.named_parameters() if p.grad is not None}
    return log_p.detach(), z.grad, grads


@pytest.mark.parametrize("guide,flow_context", [("diag", "x"), ("lowrank", "x"), ("iaf", "x"), ("iaf", "none")])
def test_blocked_log_prob_equals_the_unblocked_one_in_value_and_gradient(guide, flow_context, one_thread):
    torch.manual_seed(0)
    vae, prior = small_vamp(guide, flow_context=flow_context)
    z = torch.randn(3, 5, 4)  # (particles, batch, D): 15 points against 7 pseudo-inputs
    whole = log_p_and_grads(vae, prior, z, block_bytes=2**40)  # one block, no recomputation
    pair_bytes = vae.guide.log_prob_bytes()
    blocked = log_p_and_grads(vae, prior, z, block_bytes=3 * pair_bytes)  # blocks of 3 pairs
    assert VampMixture(vae.guide, torch.zeros(7, 32), 4, block_bytes=3 * pair_bytes).block_pairs == 3
    assert whole[0].shape == (3, 5)
    torch.testing.assert_close(blocked[0], whole[0], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(blocked[1], whole[1], rtol=1e-5, atol=1e-6)
    assert whole[2].keys() == blocked[2].keys() and any("pseudo" in k for k in whole[2])
    for name in whole[2]:
        torch.testing.assert_close(blocked[2][name], whole[2][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("guide", ["lowrank", "iaf"])
def test_a_non_diagonal_guide_builds_q_for_one_block_of_pseudo_inputs_at_a_time(guide, one_thread, monkeypatch):
    """The closed form's check must not build q(z | u_k) for all K pseudo-inputs: for a low-rank or
    IAF guide that distribution would be thrown away, with its graph, on every log_prob."""
    torch.manual_seed(5)
    vae, prior = small_vamp(guide)
    rows_seen, build = [], vae.guide.distribution_from_features

    def counting(h):
        rows_seen.append(h.shape[0])
        return build(h)

    monkeypatch.setattr(vae.guide, "distribution_from_features", counting)
    features = vae.guide.features(prior.pseudo_inputs())  # (7, F)
    mixture = VampMixture(vae.guide, features, 4, block_bytes=3 * vae.guide.log_prob_bytes())
    log_p = mixture.log_prob(torch.randn(5, 4))
    assert log_p.shape == (5,) and not mixture.diagonal
    assert max(rows_seen) <= 3, rows_seen  # blocks of 3 pairs: at most 3 pseudo-inputs per q


def test_diagonal_vamp_log_prob_equals_torch_mixture_same_family(one_thread):
    """An independent route: Pyro's MixtureSameFamily over the K Gaussians q(z | u_k)."""
    torch.manual_seed(1)
    vae, prior = small_vamp("diag", components=6)
    z = torch.randn(10, 4)
    with torch.no_grad():
        q = vae.guide.distribution(prior.pseudo_inputs())  # batch (K,), event (D,)
        reference = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(6)), q).log_prob(z)
        blocked = VampMixture(
            vae.guide, vae.guide.features(prior.pseudo_inputs()), 4, block_bytes=4 * vae.guide.log_prob_bytes()
        ).log_prob(z)
    torch.testing.assert_close(blocked, reference, rtol=1e-6, atol=1e-5)


def test_closed_form_diagonal_densities_equal_the_elementwise_ones_in_value_and_gradient(one_thread):
    """Scales from 0.005 to 3 and means up to 6 away make the expansion's terms up to ~1e6 where
    their difference is ~1: the float32 result must still match a float64 elementwise reference."""
    torch.manual_seed(3)
    loc = (torch.randn(9, 5) * 3).requires_grad_()
    scale = torch.logspace(math.log10(0.005), math.log10(3.0), 45).reshape(9, 5)[torch.randperm(9)]
    scale.requires_grad_()
    z = torch.cat(
        [
            loc.detach()[torch.arange(12) % 9] + scale.detach()[torch.arange(12) % 9] * torch.randn(12, 5),
            torch.randn(4, 5) * 4,
        ]
    ).requires_grad_()  # near a component, and anywhere
    fast = diagonal_normal_log_densities(z, loc, scale)
    assert fast.shape == (16, 9) and fast.dtype == torch.float32
    wide = [t.detach().double().requires_grad_() for t in (z, loc, scale)]
    reference = torch.distributions.Normal(wide[1], wide[2]).log_prob(wide[0].unsqueeze(-2)).sum(-1)  # (16, 9)
    torch.testing.assert_close(fast.double(), reference.detach(), rtol=1e-6, atol=1e-4)
    weights = torch.rand(16, 9, dtype=torch.float64)  # any linear functional of the matrix
    (fast.double() * weights).sum().backward()
    (reference * weights).sum().backward()
    for got, want in zip((z, loc, scale), wide):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-4, atol=1e-3)


def test_diagonal_vamp_closed_form_equals_its_blocked_elementwise_path(one_thread, monkeypatch):
    """The fast path against the general one (blocks of 3 pairs, recomputed) on the same VampPrior:
    log p(z) and the gradients for z, the pseudo-inputs and the guide's parameters."""
    torch.manual_seed(4)
    vae, prior = small_vamp("diag")
    z = torch.randn(3, 5, 4)
    fast = log_p_and_grads(vae, prior, z, block_bytes=2**40)
    monkeypatch.setattr(priors, "is_diagonal_normal", lambda q: False)
    blocked = log_p_and_grads(vae, prior, z, block_bytes=3 * vae.guide.log_prob_bytes())
    torch.testing.assert_close(fast[0], blocked[0], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(fast[1], blocked[1], rtol=1e-5, atol=1e-6)
    assert fast[2].keys() == blocked[2].keys() and any("pseudo" in k for k in fast[2])
    for name in fast[2]:
        torch.testing.assert_close(fast[2][name], blocked[2][name], rtol=1e-5, atol=1e-6)


def pair_grid_reference(guide, z, h):
    """Today's general path: the guide's distribution for c pseudo-inputs, scored on the (n, c)
    grid of pairs (for the IAF guide Pyro's inverse, D passes of each flow's network)."""
    q = guide.distribution_from_features(h)  # batch (c,), event (D,)
    return q.log_prob(z.unsqueeze(-2).expand(z.shape[0], h.shape[0], z.shape[-1]))


@pytest.mark.parametrize(
    "guide,flow_context,dtype",
    [
        ("iaf", "x", torch.float64),
        ("iaf", "x", torch.float32),
        ("iaf", "none", torch.float64),
        ("maf", "none", torch.float64),
        ("lowrank", None, torch.float64),
    ],
)
def test_pair_log_prob_equals_the_general_path_in_value_and_gradient(guide, flow_context, dtype, one_thread):
    """log q(z_n | u_k) for all pairs at once (the IAF guide's one-pass inverse of its flows, once
    per pair or, unconditioned, once per z; the MAF guide's one pass; the low-rank guide's Woodbury
    form) against the distribution's own log_prob on the grid: values, and the gradients for z,
    the features and every guide parameter, for a weighted sum of the (n, c) matrix. Three flows,
    so a reversal sits between flows and the order matters."""
    torch.manual_seed(6)
    config = FitConfig(
        prior="vamp",
        guide=guide,
        latent_dim=5,
        hidden=(24,),
        prior_components=4,
        flow_hidden=12,
        flow_layers=3,
        flow_context=flow_context,
    )
    vae = build_vae(config, IMAGE_SHAPE)
    g = vae.guide.to(dtype)
    with torch.no_grad():  # pseudo-inputs spread out, so the pairs differ
        h = g.features(torch.rand(4, *IMAGE_SHAPE, dtype=dtype)) * 3
    h.requires_grad_()
    z = (torch.randn(6, 5, dtype=dtype) * 2).requires_grad_()
    weights = torch.rand(6, 4, dtype=dtype)
    tolerance = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    inputs = [z, h, *g.parameters()]
    fast = g.pair_log_prob(z, h)
    reference = pair_grid_reference(g, z, h)
    assert fast.shape == (6, 4) and fast.dtype == dtype
    torch.testing.assert_close(fast, reference, **tolerance)
    fast_grads = torch.autograd.grad((fast * weights).sum(), inputs, allow_unused=True)
    reference_grads = torch.autograd.grad((reference * weights).sum(), inputs, allow_unused=True)
    assert sum(grad is not None for grad in reference_grads) > 4
    for got, want in zip(fast_grads, reference_grads):
        if want is None:  # a parameter the density does not use
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, want, **tolerance)


def test_iaf_pair_log_prob_runs_no_pass_of_pyros_inverse(one_thread, monkeypatch):
    """The one-pass inverse never calls a flow's network (Pyro's inverse calls it D times per flow);
    the VampPrior's log p(z) for the IAF guide goes through it."""
    torch.manual_seed(7)
    vae, prior = small_vamp("iaf")
    calls = []

    def counted(network):
        def forward(*args, **kwargs):
            calls.append(1)
            return type(network).forward(network, *args, **kwargs)

        return forward

    for flow in vae.guide.flows:
        monkeypatch.setattr(flow.nn, "forward", counted(flow.nn))
    assert vae.guide.distribution_from_features(torch.zeros(1, 32)).log_prob(torch.zeros(1, 4)).isfinite().all()
    assert len(calls) == 2 * 4  # the control: Pyro's inverse, D = 4 passes per flow
    calls.clear()
    mixture = prior()
    log_p = mixture.log_prob(torch.randn(3, 4))
    assert log_p.shape == (3,) and torch.isfinite(log_p).all() and not calls


def test_samples_pick_a_pseudo_input_uniformly(one_thread):
    """With two far-apart components, half the draws fall near each one's mean."""
    torch.manual_seed(2)
    vae, prior = small_vamp("diag", components=2)
    with torch.no_grad():
        features = torch.zeros(2, vae.guide.loc_head.in_features)
        vae.guide.loc_head.bias.copy_(torch.zeros(4))
        features[0, 0], features[1, 0] = 50.0, -50.0  # q(z | u_1), q(z | u_2) far apart along loc_head
        loc = vae.guide.distribution_from_features(features).mean  # (2, D)
        mixture = VampMixture(vae.guide, features, 4)
        z = mixture.sample((4000, 2))
    assert z.shape == (4000, 2, 4)
    nearest_first = ((z - loc[0]).norm(dim=-1) < (z - loc[1]).norm(dim=-1)).double().mean()
    # binomial(8000, 1/2): standard error 0.0056
    assert abs(float(nearest_first) - 0.5) < 4 * math.sqrt(0.25 / 8000)


def test_unconditioned_flows_invert_each_z_once_for_every_pseudo_input(one_thread, monkeypatch):
    """With flows that do not see x (the VampPrior's default), log p(z) inverts the flows for the
    n points only, against one empty context row, not for the n x K pairs; conditioned, every pair."""
    import pyro_vae.guides.iaf as iaf

    rows = []
    invert = iaf.invert_conditioned

    def counting(arn, plan, context, y, *clip):
        rows.append(y.shape[0] * context.shape[0])
        return invert(arn, plan, context, y, *clip)

    monkeypatch.setattr(iaf, "invert_conditioned", counting)
    for flow_context, pairs_per_flow in (("none", 5), ("x", 5 * 7)):
        torch.manual_seed(8)
        vae, prior = small_vamp("iaf", flow_context=flow_context)
        assert vae.guide.flows[0].nn.context_dim == (0 if flow_context == "none" else 32)
        rows.clear()
        assert prior().log_prob(torch.randn(5, 4)).isfinite().all()
        assert rows == [pairs_per_flow] * len(vae.guide.flows), (flow_context, rows)


def test_the_vampprior_defaults_to_flows_that_do_not_see_x():
    assert not flows_see_x(FitConfig(prior="vamp", guide="iaf"))
    assert flows_see_x(FitConfig(prior="vamp", guide="iaf", flow_context="x"))
    assert flows_see_x(FitConfig(prior="standard", guide="iaf"))
    assert flows_see_x(FitConfig(prior="mog", guide="maf"))
    assert not flows_see_x(FitConfig(prior="mog", guide="maf", flow_context="none"))
    unconditioned = build_vae(FitConfig(prior="vamp", guide="maf", latent_dim=4, hidden=(8,)), IMAGE_SHAPE)
    assert not unconditioned.guide.conditioned and unconditioned.guide.flows[0].nn.context_dim == 0
    with pytest.raises(ConfigError, match="--flow-context 'y' is not one of: x, none"):
        FitConfig(guide="iaf", flow_context="y")


# A subprocess: VampPrior (500 pseudo-inputs) x IAF (2 layers of 320, conditioned on x), everything
# at its default size but the batch, under an address-space limit of its size after start-up plus LIMIT_GB. Its
# log p(z) through Pyro's inverse without blocks keeps about 300 KB of autograd memory per
# (z, u_k) pair: 8 x 500 pairs need about 1.2 GB, more than the limit; the one-pass inverse in
# blocks needs far less.
LIMIT_GB = 1.0
STEPS = 2
MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys, torch, pyro
    torch.set_num_threads(1)
    from pyro_vae.config import FitConfig
    from pyro_vae.objectives import Scaled, build_elbo
    from pyro_vae.variants import build_vae, resolve_defaults

    import pyro_vae.models.priors as priors
    pyro.settings.set(module_local_params=True)  # as the training engine runs
    batch, steps, limit_gb = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    if sys.argv[4] == "unblocked":
        priors.VAMP_BLOCK_BYTES = 2**50  # the control: one block, no recomputation,
        from pyro_vae.guides.iaf import AmortizedIAF
        AmortizedIAF.pair_log_prob = None  # and Pyro's inverse, D passes of each flow per pair
    config = resolve_defaults(FitConfig(prior="vamp", guide="iaf", flow_context="x", batch_size=batch))
    assert config.prior_components == 500 and config.flow_hidden == 320 and config.latent_dim == 32
    vae = build_vae(config, (1, 28, 28), 10)
    # the engine's loss: Pyro's ELBO module over the model and guide scaled to 300 images, one torch Adam
    loss = build_elbo("trace", 1)(Scaled(vae.model), Scaled(vae.guide))
    images = torch.rand(300, 1, 28, 28).round()  # a few hundred images
    with torch.no_grad():
        loss(images[:2])  # lazy parameters exist before the optimizer sees them
    optimizer = torch.optim.Adam(loss.parameters(), lr=config.lr)
    size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    limit = size + int(limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    losses = []
    for i in range(steps):
        value = loss(images[i * batch:(i + 1) * batch], None, 300 / batch, 1.0)
        value.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(value))
    print("losses", losses, "limit_gb", round(limit / 2**30, 2))
""")


def run_under_limit(batch, steps, limit_gb, blocks="blocked"):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(batch), str(steps), str(limit_gb), blocks],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


@pytest.mark.slow
def test_vamp_iaf_at_default_sizes_trains_under_a_memory_limit():
    done = run_under_limit(batch=8, steps=STEPS, limit_gb=LIMIT_GB)
    assert done.returncode == 0, done.stderr[-3000:]
    losses = [float(v) for v in done.stdout.split("[")[1].split("]")[0].split(",")]
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)
    # the control: the same step without blocks runs out of memory under the same limit
    control = run_under_limit(batch=8, steps=1, limit_gb=LIMIT_GB, blocks="unblocked")
    assert control.returncode != 0
    assert any(s in control.stderr for s in ("can't allocate memory", "MemoryError", "out of memory"))
