"""The engine in one process: Pyro's textbook SVI and the engine take the same steps, mixed
precision keeps log-densities in float32, old checkpoints are read but not resumed, and the one
helper that sums a trace's log-densities serves training, the per-epoch ELBO and the evaluator."""

import json

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from test_train import cli_args, data_dir_of

import pyro_vae
from pyro_vae.cli.fit import main
from pyro_vae.config import FitConfig
from pyro_vae.engine import Trainer, mean_elbo_terms
from pyro_vae.objectives import build_elbo, elbo_terms, trace_log_density
from pyro_vae.variants import build_vae

TINY = dict(latent_dim=2, hidden=(32,), eval_size=100)


def test_textbook_svi_and_the_engine_take_the_same_first_steps(mnist_dataset, tmp_path, one_thread):
    """Notebook 01's loop, pyro.infer.SVI with pyro.optim.Adam on Pyro's param store, against the
    engine's step (Pyro's ELBO module, one fused torch Adam, module-local parameters), from the
    same weights, on the same batch, with the same seeds: the same losses, step after step."""
    config = FitConfig(
        **TINY, train_size=64, batch_size=64, binarize="static", data_dir=data_dir_of(mnist_dataset), out=str(tmp_path)
    )
    trainer = Trainer(config, mnist_dataset, tmp_path, "cpu", log=lambda _: None)
    args = next(iter(trainer.variant.training_batches()))  # all 64 images: the scale N / B is 1
    textbook = build_vae(config, mnist_dataset.image_shape)
    textbook.load_state_dict(trainer.vae.state_dict())
    engine_losses = []
    for step in range(5):
        pyro.set_rng_seed(100 + step)
        engine_losses.append(float(trainer.train_step(args)))
    with pyro.settings.context(module_local_params=False):
        pyro.clear_param_store()
        svi = SVI(textbook.model, textbook.guide, pyro.optim.Adam({"lr": config.lr}), Trace_ELBO())
        svi_losses = []
        for step in range(5):
            pyro.set_rng_seed(100 + step)
            svi_losses.append(svi.step(args[0]))  # (x, None, N / B = 1, beta = 1)
    assert engine_losses[0] == pytest.approx(svi_losses[0], rel=1e-6)  # the same weights
    assert engine_losses == pytest.approx(svi_losses, rel=1e-5)  # and the same steps
    assert len(set(engine_losses)) == 5  # the steps changed something
    for (name, a), b in zip(trainer.vae.named_parameters(), textbook.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_bf16_mixed_trains_with_float32_log_densities(mnist_dataset, tmp_path, one_thread):
    """--precision bf16-mixed on a CPU: networks under bfloat16 autocast, every log-density the
    ELBO sums in float32, and after a short run the held-out ELBO within 1 nat of float32's."""
    runs = {}
    for precision in ("32-true", "bf16-mixed"):
        config = FitConfig(
            **TINY,
            train_size=300,
            batch_size=50,
            epochs=3,
            precision=precision,
            data_dir=data_dir_of(mnist_dataset),
            out=str(tmp_path / precision),
        )
        runs[precision] = trainer = Trainer(config, mnist_dataset, config.out, "cpu", log=lambda _: None)
        trainer.fit()
    trainer = runs["bf16-mixed"]
    x = trainer.eval_sets[2].images[:8]
    with trainer.fabric.autocast():
        weight = torch.randn(3, 784)
        assert torch.nn.functional.linear(x.flatten(1), weight).dtype == torch.bfloat16  # autocast is on
        guide_trace = poutine.trace(trainer.vae.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(trainer.vae.model, trace=guide_trace)).get_trace(x)
        loss = trainer.loss(x)
    for trace in (guide_trace, model_trace):
        assert trace_log_density(trace).dtype == torch.float32
    assert loss.dtype == torch.float32
    test = {p: json.loads((tmp_path / p / "summary.json").read_text())["final"]["test_elbo"] for p in runs}
    assert test["bf16-mixed"] == pytest.approx(test["32-true"], abs=1.0), test
    assert test["32-true"] > -530  # both learned something (untrained: about -543)


def test_old_checkpoints_load_but_do_not_resume(mnist_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli_args(mnist_dataset, out, epochs=1, **TINY)) == 0
    for name in ("last.pt", "best.pt"):  # make it look like a run of the pyro.optim trainer
        payload = torch.load(out / name, weights_only=True)
        old = {
            "format": "pyro-vae-checkpoint/1",
            "config": payload["config"],
            "epoch": 1,
            "step": payload["step"],
            "networks": payload["networks"],
            "param_store": {},
            "optimizer": {},
            "rng": payload["rng"][0],
            "sampler": payload["sampler"],
            "extra": payload["extra"],
        }
        torch.save(old, out / name)
    vae = pyro_vae.load(out)
    assert vae.sample(2).shape == (2, 1, 28, 28)
    capsys.readouterr()
    assert main(["--resume", str(out), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "written by an older pyro-vae" in err and "--resume cannot continue it" in err


@torch.no_grad()  # values only
def test_one_helper_sums_log_densities_for_training_epoch_elbo_and_evaluator(mnist_dataset):
    """The IWAE loss (training), elbo_terms (per-epoch ELBO) and the importance-weighted
    evaluator all read a trace through trace_log_density: on the same z they agree."""
    from pyro_vae.evaluation.iwae import importance_weighted_log_px

    vae = build_vae(FitConfig(**TINY), mnist_dataset.image_shape)
    x = torch.bernoulli(mnist_dataset.test.images[:6], generator=torch.Generator().manual_seed(0))
    pyro.set_rng_seed(4)
    terms = elbo_terms(vae.model, vae.guide, x)
    pyro.set_rng_seed(4)
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    log_w = trace_log_density(model_trace) - trace_log_density(guide_trace)  # (B,)
    pyro.set_rng_seed(4)
    iwae_loss = build_elbo("iwae", 1).differentiable_loss(vae.model, vae.guide, x)  # -sum_i log w_i
    assert float(iwae_loss) == pytest.approx(-float(log_w.sum()), rel=1e-6)
    # the Monte-Carlo ELBO and the analytic-KL one agree in expectation; recon is read identically
    assert torch.allclose(terms["recon"], trace_log_density(model_trace, observed=True))
    est = importance_weighted_log_px(vae.model, vae.guide, x, k=1, seed=0)
    assert est.log_px.shape == (6,) and torch.allclose(est.log_px, est.elbo)  # K = 1: log p_1 = ELBO
    assert mean_elbo_terms(vae, x)["elbo"] == mean_elbo_terms(vae, x)["elbo"]  # seeded
