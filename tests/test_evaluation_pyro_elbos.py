"""Equivalences with Pyro's own ELBOs, on the same samples (NumPyro-style tests).

What these pin (pyro-ppl 1.9.2):

* ``RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1).loss`` is
  minus the per-image IWAE bound summed over the batch, exactly, as long as every sample site
  sits in the data plate; its ``loss_and_grads`` gradients are the gradients of that bound.
* With a site outside the data plate it becomes the bound of the whole batch as one data point,
  logsumexp_k sum_b (...) - log K, not a per-image bound.
* K = 1: the IWAE bound is the ELBO, and equals ``Trace_ELBO`` on the same sample.
* ``RenyiELBO`` has no ``differentiable_loss``, so ``RenyiELBO()(model, guide)`` (an ELBOModule
  for plain torch.optim) cannot be used; train with ``loss_and_grads`` (or SVI).

Everything is float64; both sides add the same float64 numbers in possibly different orders,
so equalities hold to 1e-10 (observed: differences ~1e-14).
"""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from iwae_reference import iwae_bound, log_importance_weights
from pyro.infer import RenyiELBO, Trace_ELBO
from pyro.nn import PyroModule

from pyro_vae.evaluation import importance_weighted_log_px, particle_seed
from pyro_vae.models.ppca import PPCA, AmortizedLinearGaussian

TOL = 1e-10
K, B = 50, 5


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture
def guide(ppca):
    g = AmortizedLinearGaussian.mean_field(ppca)
    g.scale = g.scale.detach() * 1.3  # imperfect: the weights differ between particles
    return g


@pytest.fixture
def x(ppca):
    return ppca.sample(B, torch.Generator().manual_seed(0))


def renyi(k=K):
    return RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)


class Recorder:
    """Wraps a guide; keeps the trace of its last call (values of shape (K, B, ...) in Renyi)."""

    def __init__(self, guide):
        self.guide, self.trace = guide, None

    def __call__(self, x, y=None):
        self.trace = poutine.trace(self.guide).get_trace(x, y)


@pytest.mark.parametrize("local_params", [False, True])
def test_renyi_elbo_alpha_0_is_the_per_image_iwae_bound_summed(x, local_params):
    """Same samples; with Pyro's global param store (SVI) and with module-local params
    (modules are built under the setting they are used with, as Pyro requires)."""
    with pyro.settings.context(module_local_params=local_params):
        ppca = PPCA.random(6, 3, sigma=0.5, seed=1)
        guide = AmortizedLinearGaussian.mean_field(ppca)
        guide.scale = guide.scale.detach() * 1.3
        recorder = Recorder(guide)
        loss = renyi().loss(ppca, recorder, x)
        z = recorder.trace.nodes["z"]["value"]  # (K, B, D)
        assert z.shape == (K, B, 3)
        # the same samples, tiled row k * B + b, scored by our estimator's code
        log_w = log_importance_weights(ppca, guide, x, k=K, latents={"z": z.reshape(K * B, 3)})
    per_image = torch.logsumexp(log_w, 0) - math.log(K)  # (B,)
    assert abs(-loss - per_image.sum().item()) < TOL
    # and it is not the whole-batch bound (lower in expectation; here by 0.18 nats)
    whole_batch = torch.logsumexp(log_w.sum(1), 0) - math.log(K)
    assert per_image.sum() - whole_batch > 0.1


def test_renyi_elbo_gradients_are_the_iwae_gradients(ppca, guide, x):
    """loss_and_grads vs autograd of our tiled bound, drawing the same noise from one seed."""
    params = list(ppca.parameters()) + list(guide.parameters())
    recorder = Recorder(guide)
    pyro.set_rng_seed(3)
    renyi().loss_and_grads(ppca, recorder, x)
    renyi_grads = [p.grad.clone() for p in params]
    z_renyi = recorder.trace.nodes["z"]["value"].reshape(K * B, 3)
    for p in params:
        p.grad = None
    pyro.set_rng_seed(3)
    recorder_tiled = Recorder(guide)
    log_w = log_importance_weights(ppca, recorder_tiled, x, k=K)  # (K, B)
    assert torch.equal(recorder_tiled.trace.nodes["z"]["value"], z_renyi)  # same samples
    (-(torch.logsumexp(log_w, 0) - math.log(K)).sum()).backward()
    for p, g in zip(params, renyi_grads):
        assert torch.allclose(p.grad, g, atol=TOL, rtol=0)
    pyro.set_rng_seed(3)
    assert torch.allclose(iwae_bound(ppca, guide, x, k=K), torch.logsumexp(log_w, 0) - math.log(K), atol=TOL, rtol=0)


class ShiftedPPCA(PyroModule):
    """PPCA plus a global offset outside the data plate: shift ~ N(0, 1), x ~ N(Wz + b + shift)."""

    def __init__(self, ppca):
        super().__init__()
        object.__setattr__(self, "_ppca", ppca)

    def forward(self, x, y=None):
        p = self._ppca
        shift = pyro.sample("shift", dist.Normal(x.new_zeros(()), 1.0))
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            loc = z @ p.weight.T + p.bias + shift.unsqueeze(-1)  # shift () or (K, 1) in Renyi
            pyro.sample("x", dist.Normal(loc, p.sigma).to_event(1), obs=x)


class ShiftedGuide(PyroModule):
    def __init__(self, z_guide):
        super().__init__()
        object.__setattr__(self, "_z_guide", z_guide)

    def forward(self, x, y=None):
        pyro.sample("shift", dist.Normal(x.new_tensor(0.3), 0.5))
        self._z_guide(x)


def test_renyi_elbo_with_a_site_outside_the_data_plate_is_the_whole_batch_bound(ppca, guide, x):
    model, recorder = ShiftedPPCA(ppca), Recorder(ShiftedGuide(guide))
    with torch.no_grad():
        loss = renyi().loss(model, recorder, x)
        shift = recorder.trace.nodes["shift"]["value"].reshape(K)  # (K,)
        z = recorder.trace.nodes["z"]["value"]  # (K, B, D)
        loc = z @ ppca.weight.T + ppca.bias + shift[:, None, None]  # (K, B, P)
        q_z = dist.Normal(x @ guide.weight.T + guide.bias, guide.scale).to_event(1)
        # log w_kb without the global site, and the global site's log p - log q   (K, B), (K,)
        zero, one = x.new_tensor(0.0), x.new_tensor(1.0)  # float64 constants, as in the model
        per_image = (
            dist.Normal(zero, one).expand([3]).to_event(1).log_prob(z)
            + dist.Normal(loc, ppca.sigma).to_event(1).log_prob(x)
            - q_z.log_prob(z)
        )
        global_term = dist.Normal(zero, one).log_prob(shift) - dist.Normal(x.new_tensor(0.3), 0.5).log_prob(shift)
        whole_batch = torch.logsumexp(global_term + per_image.sum(1), 0) - math.log(K)
    assert abs(-loss - whole_batch.item()) < TOL


def test_k_1_bound_is_the_elbo_and_trace_elbo_on_the_same_sample(ppca, guide, x):
    """Particle 0 is drawn right after seeding with particle_seed(seed, 0, 0), so seeding the
    same way before Trace_ELBO draws the same z."""
    est = importance_weighted_log_px(ppca, guide, x, k=1, seed=5)
    assert torch.equal(est.log_px, est.elbo)
    torch.manual_seed(particle_seed(5, 0, 0))
    trace_elbo = -Trace_ELBO(max_plate_nesting=1).loss(ppca, guide, x)
    torch.manual_seed(particle_seed(5, 0, 0))
    renyi_1 = -renyi(k=1).loss(ppca, guide, x)
    assert abs(trace_elbo - est.log_px.sum().item()) < TOL
    assert abs(renyi_1 - est.log_px.sum().item()) < TOL


def test_renyi_elbo_has_no_differentiable_loss(ppca, guide, x):
    """So it cannot drive a plain torch.optim loop through ELBOModule; use loss_and_grads."""
    with pytest.raises(AttributeError, match="differentiable_loss"):
        renyi()(ppca, guide)(x)
