"""The training step's fast paths compute plain Pyro's loss and gradients: ``--jit`` (the ELBO
module traced once per batch shape, the scales as inputs) against the eager ``Trace_ELBO`` /
``TraceMeanField_ELBO`` module on the same samples, under KL warm-up (beta changing after the
trace) and on the last, smaller batch; and the trainer's step with validation off after the first."""

import pyro
import pytest
import torch

from pyro_vae.config import FitConfig
from pyro_vae.errors import ConfigError
from pyro_vae.objectives import JitELBO, Scaled, build_elbo
from pyro_vae.variants import build_vae, check

CASES = [
    dict(elbo="trace"),
    dict(elbo="meanfield"),
    dict(elbo="trace", net="conv"),
    dict(elbo="trace", guide="iaf"),
    dict(elbo="trace", prior="vamp"),
    dict(elbo="trace", model="cvae"),
    dict(elbo="trace", particles=3),
]


def _losses(case):
    config = FitConfig(hidden=(32, 32), latent_dim=4, flow_hidden=16, **case)
    vae = build_vae(config, (1, 28, 28), 10)
    eager = build_elbo(config.elbo, config.particles)(Scaled(vae.model), Scaled(vae.guide))
    return config, eager, JitELBO(eager)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_jit_loss_and_gradients_equal_the_eager_elbo(case):
    config, eager, jitted = _losses(case)
    generator = torch.Generator().manual_seed(1)
    labelled = config.model == "cvae"

    def batch(rows):
        x = (torch.rand(rows, 1, 28, 28, generator=generator) > 0.5).float()
        y = torch.randint(0, 10, (rows,), generator=generator)
        return (x, y) if labelled else (x, None)

    params = list(eager.parameters())
    jitted(*batch(2))  # the first call with validation on runs eagerly (it also creates lazy params)
    assert jitted.validated and not jitted.traces
    # beta rises (KL warm-up) and the last batch is smaller: each must reach the traced loss
    for rows, beta, scale in ((16, 0.25, 100 / 16), (16, 0.75, 100 / 16), (4, 1.0, 100 / 4)):
        args = (*batch(rows), scale, beta)
        results = []
        for loss_fn in (jitted, eager):
            torch.manual_seed(7)
            loss = loss_fn(*args)
            results.append((loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)))
        (jit_loss, jit_grads), (eager_loss, eager_grads) = results
        assert torch.allclose(jit_loss, eager_loss, rtol=1e-5), (rows, beta)
        # float32 rounding relative to the largest gradient (a bias before batch norm has a true
        # gradient of 0: there both are rounding noise)
        tolerance = 1e-6 * max(b.abs().max().item() for b in eager_grads if b is not None)
        for a, b in zip(jit_grads, eager_grads):
            assert (a is None) == (b is None)
            if a is not None:
                assert torch.allclose(a, b, rtol=1e-4, atol=tolerance), (rows, beta)
    assert len(jitted.traces) == 2  # one per batch shape


def test_tracing_leaves_batch_norm_statistics_as_one_eager_step_would():
    config, eager, jitted = _losses(dict(elbo="trace", net="conv"))
    x = (torch.rand(8, 1, 28, 28) > 0.5).float()
    jitted(x)  # eager, validated
    before = {n: b.clone() for n, b in eager.named_buffers()}
    torch.manual_seed(3)
    jitted(x)  # traces, then runs the trace: one update of the running statistics
    after_jit = {n: b.clone() for n, b in eager.named_buffers()}
    for n, b in eager.named_buffers():
        b.copy_(before[n])
    torch.manual_seed(3)
    eager(x)
    for n, b in eager.named_buffers():
        if n.endswith("num_batches_tracked"):  # a trace keeps the counter as a constant: with the
            continue  # nets' fixed momentum (0.1) batch norm never reads it
        assert torch.allclose(after_jit[n], b), n


@pytest.mark.parametrize(
    "elbo,pyro_elbo", [("trace", pyro.infer.Trace_ELBO), ("meanfield", pyro.infer.TraceMeanField_ELBO)]
)
def test_device_resident_elbos_equal_pyros(elbo, pyro_elbo):
    """The default losses (no host reads) give plain Pyro's loss and gradients on the same
    samples, and leave Pyro's module functions as they were."""
    config, eager, jitted = _losses(dict(elbo=elbo, particles=2))
    plain = pyro_elbo(num_particles=2, vectorize_particles=True, max_plate_nesting=1)(eager.model, eager.guide)
    args = ((torch.rand(8, 1, 28, 28) > 0.5).float(), None, 7.0, 0.3)  # x, y, N / B, beta
    eager(*args)  # lazy parameters
    params = list(eager.parameters())
    results = []
    for loss_fn in (eager, plain):
        torch.manual_seed(5)
        loss = loss_fn(*args)
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert pyro.infer.trace_elbo.torch_item is pyro.infer.util.torch_item
    assert pyro.infer.trace_elbo.warn_if_nan is pyro.util.warn_if_nan


def test_jit_is_refused_where_it_cannot_trace():
    with pytest.raises(ConfigError, match="--jit traces --elbo trace or meanfield"):
        check(FitConfig(elbo="iwae", jit=True))
    with pytest.raises(ConfigError, match="--jit"):
        check(FitConfig(model="m2", labels=100, jit=True))


def test_trainer_with_jit_takes_the_eager_steps(mnist_dataset, tmp_path, one_thread):
    """Two short runs from the same seed, --jit and eager, under KL warm-up, over an epoch whose
    last batch is smaller (70 = 32 + 32 + 6 images): the same losses, step after step, and the
    same weights after."""
    from pyro_vae.engine import Trainer

    losses, trainers = {}, {}
    for jit in (False, True):
        config = FitConfig(
            latent_dim=2,
            hidden=(32,),
            eval_size=50,
            train_size=70,
            batch_size=32,
            warmup_epochs=2,
            jit=jit,
            out=str(tmp_path / str(jit)),
        )
        trainer = trainers[jit] = Trainer(config, mnist_dataset, config.out, "cpu", log=lambda _: None)
        losses[jit] = []
        for epoch in range(2):
            for i, args in enumerate(trainer.variant.training_batches()):
                args = (*args[:-1], 0.1 + 0.2 * (3 * epoch + i))  # beta rising step after step
                pyro.set_rng_seed(1000 + 3 * epoch + i)
                losses[jit].append(float(trainer.train_step(args)))
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    assert len(set(losses[False])) == 6
    assert len(trainers[True].loss.module.traces) == 2  # 32 and 6 images
    for (name, a), b in zip(trainers[True].vae.named_parameters(), trainers[False].vae.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_validation_is_on_for_the_first_step_only(mnist_dataset, tmp_path, monkeypatch, one_thread):
    """Outside the tests (PYRO_VAE_VALIDATE_EVERY_STEP unset) a run validates distribution
    arguments on its first step, so bad data is caught, and not after."""
    from pyro.infer.util import is_validation_enabled

    from pyro_vae.engine import Trainer, loop

    monkeypatch.setattr(loop, "VALIDATE_EVERY_STEP", False)
    config = FitConfig(latent_dim=2, hidden=(32,), eval_size=50, train_size=64, batch_size=32, out=str(tmp_path))
    trainer = Trainer(config, mnist_dataset, config.out, "cpu", log=lambda _: None)
    seen = []
    step = trainer._step
    monkeypatch.setattr(trainer, "_step", lambda args: (seen.append(is_validation_enabled()), step(args))[1])
    for args in list(trainer.variant.training_batches()) * 2:
        trainer.train_step(args)
    assert seen == [True, False, False, False]
    assert is_validation_enabled()  # the global setting is untouched


class _ParamMessages(pyro.poutine.messenger.Messenger):
    """Records the name of every ``param`` message a program sends."""

    def __init__(self):
        super().__init__()
        self.names = []

    def _pyro_param(self, msg):
        self.names.append(msg["name"])


@pytest.mark.parametrize(
    "case",
    [
        dict(),
        dict(guide="lowrank"),
        dict(guide="iaf"),
        dict(model="cvae"),
        dict(model="m2", prior="standard"),
        dict(prior="learned"),
    ],
    ids=lambda c: "-".join(map(str, c.values())) or "default",
)
def test_networks_send_no_param_messages_with_module_local_parameters(case):
    """The networks are TorchNetwork attributes: with module-local parameters a model and guide
    call sends no message per network parameter through the poutine stack (only PyroParams, which
    Pyro constrains, are announced); with the global param store they are all registered there."""
    config = FitConfig(hidden=(16,), latent_dim=3, flow_hidden=8, **case)
    vae = build_vae(config, (1, 28, 28), 10)
    x = torch.rand(5, 1, 28, 28).bernoulli()
    y = torch.arange(5) if config.model != "vae" else None
    pyro_params = {
        name[: -len("_unconstrained")] for name, _ in vae.named_parameters() if name.endswith("_unconstrained")
    }  # PyroParams: constrained, so announced
    with _ParamMessages() as seen:
        pyro.poutine.trace(vae.guide).get_trace(x, y)
        if config.model == "m2":
            pyro.poutine.trace(vae.guide).get_trace(x)
        pyro.poutine.trace(vae.model).get_trace(x, y)
    assert not [name for name in seen.names if name.endswith((".weight", ".bias"))]  # no network's
    assert all(any(name.endswith(p) for p in pyro_params) for name in seen.names), seen.names
    assert len(seen.names) >= len(pyro_params)  # (the learned prior's are announced)
    with pyro.settings.context(module_local_params=False):
        pyro.clear_param_store()
        pyro.poutine.trace(vae.guide).get_trace(x, y)
        if config.model == "m2":  # its classifier q(y|x) runs for images without labels
            pyro.poutine.trace(vae.guide).get_trace(x)
        pyro.poutine.trace(vae.model).get_trace(x, y)
        store = pyro.get_param_store()
        assert len(store) == sum(1 for _ in vae.parameters())  # every parameter, networks included
        pyro.clear_param_store()
