"""``--compile``: the ELBO module captured once per batch shape (its parameters, buffers, N / B
and beta as inputs) and compiled by ``torch.compile`` computes plain Pyro's loss and gradients,
on the same random draws: the captured graph as it is (what runs without a C++ compiler) for
every kind of network, guide and prior ``--jit`` takes, inductor's compiled graph for the
default model; a compiled trainer takes the eager trainer's steps."""

import pytest
import torch

from pyro_vae.compiled_elbo import CompiledELBO, compiler_problem
from pyro_vae.config import FitConfig
from pyro_vae.errors import ConfigError
from pyro_vae.objectives import Scaled, build_elbo
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

needs_inductor = pytest.mark.skipif(
    compiler_problem(torch.device("cpu")) is not None, reason="inductor cannot compile on this CPU (no C++ compiler)"
)


def _losses(case, backend):
    config = FitConfig(hidden=(32, 32), latent_dim=4, flow_hidden=16, **case)
    vae = build_vae(config, (1, 28, 28), 10)
    eager = build_elbo(config.elbo, config.particles)(Scaled(vae.model), Scaled(vae.guide))
    return config, eager, CompiledELBO(eager, backend=backend)


def _check_against_eager(case, backend, steps):
    """The compiled loss and its gradients against the eager ELBO module's, the same draws, at
    each ``(rows, beta, N / B)`` of ``steps``; returns the compiled module."""
    config, eager, compiled = _losses(case, backend)
    generator = torch.Generator().manual_seed(1)
    labelled = config.model == "cvae"

    def batch(rows):
        x = (torch.rand(rows, 1, 28, 28, generator=generator) > 0.5).float()
        y = torch.randint(0, 10, (rows,), generator=generator)
        return (x, y) if labelled else (x, None)

    compiled(*batch(2))  # the first call with validation on runs eagerly (it also creates lazy params)
    assert compiled.validated and not compiled.graphs
    params = list(eager.parameters())
    for rows, beta, scale in steps:
        args = (*batch(rows), scale, beta)
        results = []
        for loss_fn in (compiled, eager):
            torch.manual_seed(7)
            loss = loss_fn(*args)
            results.append((loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)))
        (compiled_loss, compiled_grads), (eager_loss, eager_grads) = results
        assert torch.allclose(compiled_loss, eager_loss, rtol=1e-5), (rows, beta)
        # float32 rounding relative to the largest gradient (a bias before batch norm has a true
        # gradient of 0: there both are rounding noise)
        tolerance = 1e-6 * max(b.abs().max().item() for b in eager_grads if b is not None)
        for a, b in zip(compiled_grads, eager_grads):
            assert (a is None) == (b is None)
            if a is None:
                continue
            if backend is None:  # the same operations in the same order
                assert torch.allclose(a, b, rtol=1e-4, atol=tolerance), (rows, beta)
            elif b.abs().max() > 100 * tolerance:  # inductor reorders sums: each gradient to 1e-5 in norm
                assert (a - b).norm() <= 1e-5 * b.norm(), (rows, beta)
    return compiled


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_captured_loss_and_gradients_equal_the_eager_elbo(case):
    """Under KL warm-up (beta changing after the capture) and on a last, smaller batch."""
    steps = ((16, 0.25, 100 / 16), (16, 0.75, 100 / 16), (4, 1.0, 100 / 4))
    compiled = _check_against_eager(case, None, steps)
    assert len(compiled.graphs) == 2  # one per batch shape


@pytest.mark.slow  # a compile, 20-60 s on a 2-core CPU; the fast version is the captured graph's test above
@needs_inductor
def test_inductor_compiled_loss_and_gradients_equal_the_eager_elbo():
    """The default model compiled by inductor: the same draws (torch's random kernels), the same
    loss and gradients up to the reordering of float32 sums; beta and N / B change without a new
    graph."""
    compiled = _check_against_eager(dict(elbo="trace"), "inductor", ((16, 0.25, 100 / 16), (16, 0.75, 30.0)))
    assert len(compiled.graphs) == 1


@pytest.mark.slow
@needs_inductor
def test_inductor_compiled_loss_and_gradients_equal_the_eager_elbo_with_the_closed_form_kl():
    _check_against_eager(dict(elbo="meanfield"), "inductor", ((16, 0.25, 100 / 16), (16, 0.75, 30.0)))


def test_capture_leaves_batch_norm_statistics_as_one_eager_step_would():
    """The running statistics are inputs of the graph, updated in place as eagerly (the counter
    of batches too), and the capture's own run of the loss leaves no trace in them."""
    config, eager, compiled = _losses(dict(elbo="trace", net="conv"), None)
    x = (torch.rand(8, 1, 28, 28) > 0.5).float()
    compiled(x)  # eager, validated
    before = {n: b.clone() for n, b in eager.named_buffers()}
    assert before
    torch.manual_seed(3)
    compiled(x)  # captures, then runs the graph: one update of the running statistics
    after_compiled = {n: b.clone() for n, b in eager.named_buffers()}
    for n, b in eager.named_buffers():
        b.copy_(before[n])
    torch.manual_seed(3)
    eager(x)
    for n, b in eager.named_buffers():
        assert torch.allclose(after_compiled[n], b), n
    assert any(not torch.equal(after_compiled[n], before[n]) for n in before)


class _ReadsOnTheHost(torch.nn.Module):
    """A loss whose value depends on a number read on the host: it cannot be captured."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, y=None, data_scale=1.0, beta=1.0):
        return self.w * x.sum() * data_scale if float(x.mean()) > 0.5 else self.w * beta


def test_a_loss_that_reads_values_on_the_host_is_refused_by_name():
    compiled = CompiledELBO(_ReadsOnTheHost(), backend=None)
    compiled(torch.ones(3))  # the first, validated call runs eagerly
    with pytest.raises(ConfigError, match=r"reads a tensor's value on the host.*drop --compile"):
        compiled(torch.ones(3))


def test_compile_is_refused_where_it_cannot_capture():
    with pytest.raises(ConfigError, match="--compile captures --elbo trace or meanfield, not --elbo iwae"):
        check(FitConfig(elbo="iwae", compile=True))
    with pytest.raises(ConfigError, match="--model m2's enumerated objective runs eagerly"):
        check(FitConfig(model="m2", labels=100, compile=True))
    with pytest.raises(ConfigError, match="give one"):
        check(FitConfig(compile=True, jit=True))


def _trainer_losses(mnist_dataset, tmp_path, compiled: bool, log=lambda _: None):
    """Two epochs of a small run under KL warm-up, over an epoch whose last batch is smaller
    (70 = 32 + 32 + 6 images): the trainer and its losses, step after step."""
    import pyro

    from pyro_vae.engine import Trainer

    config = FitConfig(
        latent_dim=2,
        hidden=(32,),
        eval_size=50,
        train_size=70,
        batch_size=32,
        warmup_epochs=2,
        compile=compiled,
        out=str(tmp_path / str(compiled)),
    )
    trainer = Trainer(config, mnist_dataset, config.out, "cpu", log=log)
    losses = []
    for epoch in range(2):
        for i, args in enumerate(trainer.variant.training_batches()):
            args = (*args[:-1], 0.1 + 0.2 * (3 * epoch + i))  # beta rising step after step
            pyro.set_rng_seed(1000 + 3 * epoch + i)
            losses.append(float(trainer.train_step(args)))
    return trainer, losses


def _assert_same_run(mnist_dataset, tmp_path, compiled_trainer, compiled_losses):
    eager_trainer, eager_losses = _trainer_losses(mnist_dataset, tmp_path, False)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    assert len(set(eager_losses)) == 6
    assert len(compiled_trainer.loss.module.graphs) == 2  # 32 and 6 images
    for (name, a), b in zip(compiled_trainer.vae.named_parameters(), eager_trainer.vae.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_trainer_without_a_compiler_says_so_and_takes_the_eager_steps(mnist_dataset, tmp_path, monkeypatch, one_thread):
    """Where inductor cannot compile, the run says what is missing and trains on the captured
    graph as it is: the eager run's steps."""
    import pyro_vae.compiled_elbo as compiled_elbo

    monkeypatch.setattr(compiled_elbo, "compiler_problem", lambda device: "no C++ compiler (install g++)")
    lines = []
    trainer, losses = _trainer_losses(mnist_dataset, tmp_path, True, log=lines.append)
    assert trainer.loss.module.backend is None
    assert any("--compile: no C++ compiler (install g++)" in line and "uncompiled" in line for line in lines), lines
    _assert_same_run(mnist_dataset, tmp_path, trainer, losses)


@pytest.mark.slow
@needs_inductor
def test_trainer_with_compile_takes_the_eager_steps(mnist_dataset, tmp_path, one_thread):
    trainer, losses = _trainer_losses(mnist_dataset, tmp_path, True)
    assert trainer.loss.module.backend == "inductor"
    _assert_same_run(mnist_dataset, tmp_path, trainer, losses)
