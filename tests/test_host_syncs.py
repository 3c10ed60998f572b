"""GPU readiness without a GPU: host-device synchronisations per training step and per
evaluation chunk, counted on the ``meta`` device.

A step on a GPU runs ahead of the host as long as nothing reads a value back: ``.item()``,
``bool()`` / ``float()`` of a tensor, ``nonzero`` and copies to the CPU each make the host wait
for every queued kernel. The models here are built on the ``meta`` device (shapes and dtypes, no
data; a tensor made on the CPU inside a model mixes devices and raises, as it would on a GPU),
and a dispatch mode counts every such read. Backward passes need the autograd engine, which fake
CUDA tensors cannot drive without a GPU, so the steps run on ``meta``; the evaluation chunk,
forward only, also runs on fake CUDA tensors (``FakeTensorMode``). The budgets are the counts of
the landed code: a count that rises fails the test. Pyro's validation is off, as it is after a
run's first step (the loop reads the losses once per log interval, not here).
"""

import warnings
from types import SimpleNamespace

import pyro
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_vae.config import FitConfig
from pyro_vae.engine import Trainer
from pyro_vae.engine.optim import build_optimizer
from pyro_vae.evaluation.iwae import _chunk_log_weights, particle_seed
from pyro_vae.objectives import ELBOS, Scaled, SemiSupervisedLoss
from pyro_vae.variants import build_vae

HOST_READS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.is_nonzero.default,
}
# syncs per training step (validation off), and per evaluation chunk. M2: 5 reads remain inside
# Pyro's TraceEnum_ELBO enumeration of the label (66 before its losses stayed on the device)
BUDGETS = {"vae": 0, "cvae": 0, "vae-meanfield": 0, "iwae": 0, "m2": 5, "evaluation chunk": 0, "vamp-iaf": 0}


class HostReads(TorchDispatchMode):
    """Counts reads of device values on the host: scalars (``.item()``, ``bool()``,
    ``float()``), ``nonzero`` and copies from a device to the CPU. A read scalar is answered
    with 1 (True), so data-free tensors can go on."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensor = args[0] if args and isinstance(args[0], torch.Tensor) else None
        on_device = tensor is not None and tensor.device.type != "cpu"
        if func is torch.ops.aten._local_scalar_dense.default and on_device:
            self.reads.append("item")
            return True if tensor.dtype == torch.bool else 1 if not tensor.is_floating_point() else 1.0
        if func in HOST_READS and on_device:
            self.reads.append(str(func))
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            source = args[1] if func is torch.ops.aten.copy_.default else tensor
            target = tensor.device if func is torch.ops.aten.copy_.default else kwargs.get("device")
            if source.device.type != "cpu" and target is not None and torch.device(target).type == "cpu":
                self.reads.append("copy to cpu")
        return func(*args, **kwargs)


def _loss(kind: str, vae):
    if kind == "m2":
        return SemiSupervisedLoss(vae.model, vae.guide, 1000, 100, 0.1)
    elbo = {"vae-meanfield": "meanfield", "iwae": "iwae"}.get(kind, "trace")
    particles = 5 if kind == "iwae" else 1
    return ELBOS.build(elbo, particles)(Scaled(vae.model), Scaled(vae.guide))


def _args(kind: str, device):
    """The loss's arguments: the batch, its data-set scale 100 and beta (0.5; IWAE: 1)."""
    x = torch.empty(16, 1, 28, 28, device=device).bernoulli_(0.5)
    y = torch.randint(0, 10, (16,), device=device)
    beta = 1.0 if kind == "iwae" else 0.5
    return {"cvae": (x, y, 100.0, beta), "m2": (x, x[:8], y[:8], 100.0, 100.0, beta)}.get(kind, (x, None, 100.0, beta))


@pytest.mark.parametrize("kind", ["vae", "vae-meanfield", "cvae", "m2", "iwae", "vamp-iaf"])
def test_host_syncs_per_training_step(kind, monkeypatch):
    from pyro_vae.engine import loop

    monkeypatch.setattr(loop, "VALIDATE_EVERY_STEP", False)
    model = {"vae-meanfield": "vae", "iwae": "vae", "vamp-iaf": "vae"}.get(kind, kind)
    pieces = (
        dict(prior="vamp", prior_components=10, guide="iaf", flow_hidden=16, flow_context="x")
        if kind == "vamp-iaf"
        else {}
    )
    config = FitConfig(model=model, hidden=(32, 32), latent_dim=4, labels=100 if model == "m2" else None, **pieces)
    # VampPrior x IAF: log q(z | u_k) inverts the flows; built on the CPU (as a run builds it) and
    # then moved, so its flows' orders have host copies (pyro_vae.guides.iaf)
    moved = build_vae(config, (1, 28, 28), 10).to("meta") if kind == "vamp-iaf" else None
    # meta tensors have no values to read: answered with 1, which Pyro's validation (on for the
    # first step) may then call a NaN
    quiet = warnings.catch_warnings()
    with quiet, torch.device("meta"), HostReads():
        warnings.simplefilter("ignore")
        vae = moved or build_vae(config, (1, 28, 28), 10)
        loss = _loss(kind, vae)
        args = _args(kind, "meta")
        loss(*args)  # lazy parameters
    optimizer = build_optimizer(loss.parameters(), 1e-3)
    # the trainer's own step, around this loss and optimizer
    trainer = SimpleNamespace(
        loss=loss,
        fabric=SimpleNamespace(backward=lambda t: t.backward()),
        clip=None,
        fabric_optimizer=optimizer,
        validated=False,
    )
    trainer._step = lambda a: Trainer._step(trainer, a)
    with warnings.catch_warnings(), HostReads():
        warnings.simplefilter("ignore")
        Trainer.train_step(trainer, args)  # the first step: validated
    counter = HostReads()
    with warnings.catch_warnings(), counter:
        warnings.simplefilter("ignore")  # (NaN warnings about the answered reads)
        for _ in range(2):
            Trainer.train_step(trainer, args)
    assert len(counter.reads) / 2 <= BUDGETS[kind], counter.reads
    assert next(loss.parameters()).device.type == "meta"


@pytest.mark.parametrize("device", ["meta", "cuda"])
def test_host_syncs_per_evaluation_chunk(device):
    """One chunk of 20 particles of the importance-weighted estimator: the guide once, the
    particles drawn from its distribution, one model call (the running sums on the host are
    the caller's, once per chunk)."""
    config = FitConfig(hidden=(32, 32), latent_dim=4)
    fake = FakeTensorMode(allow_non_fake_inputs=False) if device == "cuda" else None
    with fake or torch.device("meta"), torch.device(device), torch.no_grad(), pyro.validation_enabled(False):
        vae = build_vae(config, (1, 28, 28), 10).eval()
        x = torch.empty(16, 1, 28, 28).bernoulli_(0.5)
        counter = HostReads()
        with counter:
            log_w, _, _ = _chunk_log_weights(
                vae.model, vae.guide, x, None, [particle_seed(0, 0, j) for j in range(20)], "z"
            )
        assert log_w.shape == (20, 16) and log_w.device.type == device
    assert len(counter.reads) <= BUDGETS["evaluation chunk"], counter.reads


def test_iaf_flow_orders_on_the_host_follow_a_loaded_state():
    """The IAF guide's CPU copies of its flows' autoregressive orders (read by Pyro's inverse)
    are those of the weights loaded, not of the random initialisation."""
    config = FitConfig(hidden=(16,), latent_dim=5, guide="iaf", flow_hidden=8)
    torch.manual_seed(0)
    first = build_vae(config, (1, 28, 28), 10)
    torch.manual_seed(1)
    second = build_vae(config, (1, 28, 28), 10)
    orders = [o.clone() for o in first.guide.orders_on_host]
    assert any(not torch.equal(a, b) for a, b in zip(orders, second.guide.orders_on_host))  # random orders
    second.load_state_dict(first.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(orders, second.guide.orders_on_host))
    z = torch.randn(3, 5)
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(first.guide.distribution(x).log_prob(z), second.guide.distribution(x).log_prob(z))
