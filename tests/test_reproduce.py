"""python -m pyro_vae.reproduce: every published setting is built exactly as the papers say, runs
two steps on a few hundred images and is evaluated; Burda et al.'s schedule; the fit options it
needs (activation, gated dense layers, initialisation, Adam, early stopping, time limit)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from pyro_vae.cli import reproduce as reproduce_cli
from pyro_vae.config import FitConfig
from pyro_vae.data import data_record
from pyro_vae.engine import Trainer, reproduce
from pyro_vae.errors import ConfigError
from pyro_vae.nets import GatedDense
from pyro_vae.schedules import BURDA_TOTAL_PASSES, burda_lr_factor, burda_stage_ends
from pyro_vae.variants import build_vae, check

pytestmark = pytest.mark.usefixtures("one_thread")

# The issue's and the papers' values, written out independently of pyro_vae/engine/reproduce.py.
BURDA = dict(
    binarize="dynamic",
    train_on_validation=True,
    net="mlp",
    activation="tanh",
    hidden=(200, 200),
    latent_dim=50,
    init="glorot",
    batch_size=20,
    lr=1e-3,
    adam_beta1=0.9,
    adam_beta2=0.999,
    adam_eps=1e-4,
    lr_schedule="burda",
    epochs=3280,
    prior="standard",
    likelihood="bernoulli",
)
# Tomczak & Welling's L=1 targets are on static MNIST (pythae's VampPrior reproduction quotes -85.57
# for Larochelle's fixed binarization)
TOMCZAK = dict(
    binarize="static",
    net="gated-mlp",
    hidden=(300, 300),
    latent_dim=40,
    lr=5e-4,
    batch_size=100,
    warmup_epochs=100.0,
    early_stopping=50,
    lr_decay=1.0,
    adam_beta1=0.9,
    adam_beta2=0.999,
)
EXPECTED = {
    "burda2015-vae-k1": ({**BURDA, "elbo": "trace", "particles": 1}, -86.76),
    "burda2015-iwae-k5": ({**BURDA, "elbo": "iwae", "particles": 5}, -85.54),
    "burda2015-iwae-k50": ({**BURDA, "elbo": "iwae", "particles": 50}, -84.78),
    # two stochastic layers (100 and 50 units), 100-unit tanh layers below z1 (50 above, halved)
    "burda2015-vae-2layer": (
        {**BURDA, "model": "hvae", "latent_dim": (100, 50), "hidden": (100, 100), "elbo": "trace", "particles": 1},
        -85.33,
    ),
    "burda2015-iwae-2layer-k50": (
        {**BURDA, "model": "hvae", "latent_dim": (100, 50), "hidden": (100, 100), "elbo": "iwae", "particles": 50},
        -82.90,
    ),
    "tomczak2018-standard": ({**TOMCZAK, "prior": "standard"}, -88.56),
    "tomczak2018-vamp": ({**TOMCZAK, "prior": "vamp", "prior_components": 500}, -85.57),
    # Pyro's SS-VAE tutorial: 500 softplus units, z 50, lr 0.00042, beta1 0.95, batch 200, aux loss 46
    "kingma2014-m2-100": (
        dict(
            model="m2",
            labels=100,
            net="mlp",
            activation="softplus",
            hidden=(500,),
            latent_dim=50,
            lr=0.00042,
            adam_beta1=0.95,
            batch_size=200,
            epochs=50,
            labelled_weight="counted",
            labelled_steps="interleaved",
            alpha=46 * 100 / 50_000,
        ),
        0.1197,
    ),
}
# Burda et al.: 3^i passes at 0.001 * 10^(-i/7); the rates written out as decimals.
BURDA_RATES = [1e-3, 7.196857e-4, 5.179475e-4, 3.727594e-4, 2.682696e-4, 1.930698e-4, 1.389495e-4, 1e-4]


def data_dir_of(dataset) -> str:
    return str(Path(dataset.root).parent.parent)  # root is <data dir>/MNIST/raw


def test_every_setting_is_listed_with_the_issues_values(capsys):
    assert set(reproduce.SETTINGS) == set(EXPECTED)
    for name, (values, target) in EXPECTED.items():
        setting = reproduce.SETTINGS[name]
        config = setting.fit_config()
        assert setting.target == target
        for key, value in values.items():
            assert getattr(config, key) == value, (name, key)
    assert reproduce_cli.main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in EXPECTED:
        assert name in listed
    assert "-86.76" in listed and "11.97%" in listed and "9,840,000 steps of 20" in listed


def test_burda_schedule_has_3280_passes_at_the_stated_rates():
    assert BURDA_TOTAL_PASSES == 3280
    assert burda_stage_ends() == [1, 4, 13, 40, 121, 364, 1093, 3280]
    rates = [1e-3 * burda_lr_factor(p) for p in range(BURDA_TOTAL_PASSES)]
    distinct = sorted(set(rates), reverse=True)
    assert distinct == pytest.approx(BURDA_RATES, rel=1e-6)
    assert [rates.count(r) for r in distinct] == [3**i for i in range(8)]
    assert rates == sorted(rates, reverse=True)
    assert 1e-3 * burda_lr_factor(BURDA_TOTAL_PASSES + 10) == pytest.approx(1e-4)  # stays at the last rate


def _linears(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def _count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())  # PyroModule[Tanh] is a Tanh


def test_burda_network_is_784_200_200_50_tanh_with_glorot_init():
    vae = build_vae(reproduce.SETTINGS["burda2015-vae-k1"].fit_config(), (1, 28, 28))
    guide, decoder = vae.guide, vae.model.decoder
    assert _linears(guide.encoder) == [(784, 200), (200, 200)]
    assert (guide.loc_head.in_features, guide.loc_head.out_features) == (200, 50)
    assert _linears(decoder) == [(50, 200), (200, 200), (200, 784)]
    assert _count(vae, nn.Tanh) == 4 and _count(vae, nn.ReLU) == 0  # 2 in the encoder, 2 in the decoder
    for layer in vae.modules():
        if isinstance(layer, nn.Linear):  # Glorot: U(-a, a), a = sqrt(6 / (fan_in + fan_out)); b = 0
            a = math.sqrt(6 / (layer.in_features + layer.out_features))
            assert float(layer.weight.detach().abs().max()) <= a
            assert float(layer.weight.detach().abs().max()) > 0.95 * a  # uniform, not a narrower default
            assert float(layer.weight.detach().std()) == pytest.approx(a / math.sqrt(3), rel=0.05)
            assert torch.count_nonzero(layer.bias) == 0


def test_tomczak_networks_are_gated_300_300_latent_40_he_init():
    vae = build_vae(reproduce.SETTINGS["tomczak2018-vamp"].fit_config(), (1, 28, 28))

    def gated(module):
        return [(m.h.in_features, m.h.out_features) for m in module.modules() if isinstance(m, GatedDense)]

    assert gated(vae.guide.encoder) == [(784, 300), (300, 300)]
    assert gated(vae.model.decoder) == [(40, 300), (300, 300)]
    assert _linears(vae.model.decoder)[-1] == (300, 784)
    assert vae.guide.loc_head.out_features == 40
    assert tuple(vae.model.prior.pseudo_weights.shape) == (500, 1, 28, 28)
    first = vae.guide.encoder.net[0].h  # He: N(0, 2 / fan_in)
    assert float(first.weight.detach().std()) == pytest.approx(math.sqrt(2 / 784), rel=0.03)
    assert float(first.weight.detach().mean()) == pytest.approx(0, abs=0.01 * math.sqrt(2 / 784))


def test_gated_dense_is_linear_times_sigmoid_gate():
    torch.manual_seed(0)
    layer = GatedDense(5, 3)
    x = torch.randn(4, 5)
    expected = (x @ layer.h.weight.T + layer.h.bias) / (1 + torch.exp(-(x @ layer.gate.weight.T + layer.gate.bias)))
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_m2_networks_are_one_layer_of_500_softplus_units():
    vae = build_vae(reproduce.SETTINGS["kingma2014-m2-100"].fit_config(), (1, 28, 28))
    assert _count(vae, nn.Softplus) > 0 and _count(vae, nn.ReLU) == 0
    hidden = {out for _, out in _linears(vae)}
    assert 500 in hidden and 50 in hidden


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_setting_runs_two_steps_and_its_evaluation(name, mnist_dataset, tmp_path):
    setting = reproduce.SETTINGS[name]
    batch = setting.config["batch_size"]
    labelled = setting.config.get("labels", 0)
    out = tmp_path / name
    results = reproduce.run(
        name,
        out,
        budget_minutes=5,
        train_size=labelled + 2 * batch,
        eval_size=200,
        k=8,
        max_passes=1,
        data_dir=data_dir_of(mnist_dataset),
        device="cpu",
    )
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # two SVI steps (M2, interleaved as Pyro's tutorial: two unlabelled batches and the labelled one's own step)
    assert [r["step"] for r in metrics] == [3 if setting.config.get("labelled_steps") == "interleaved" else 2]
    # the optimizer the run trained with has the paper's hyperparameters (pass 1: the base rate)
    assert metrics[0]["lr"] == pytest.approx(setting.config["lr"])
    saved = json.loads((out / reproduce.RESULTS).read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["passes_done"] == 1 and saved["stopped"] == "max-passes"
    assert saved["deviations"] == {"train_size": labelled + 2 * batch, "eval_size": 200, "k": 8}
    final = saved["final"]
    if setting.quantity == "log_px":
        assert final["images"] == 200 and final["k"] == 8
        assert final["elbo"] <= final["log_px"] < 0  # the K = 8 bound is above the ELBO on the same samples
        assert saved["gap"] == pytest.approx(final["log_px"] - setting.target)
        assert [p["passes"] for p in saved["curve"]] == [1]
    else:
        assert 0 <= final["test_error"] <= 1
        assert saved["gap"] == pytest.approx(final["test_error"] - setting.target)
    assert (out / reproduce.CURVE_PICTURE).stat().st_size > 0


def test_binarize_runs_the_other_protocol_as_a_recorded_deviation(mnist_dataset, tmp_path):
    quick = dict(
        budget_minutes=5,
        train_size=200,
        eval_size=50,
        k=4,
        max_passes=1,
        data_dir=data_dir_of(mnist_dataset),
        device="cpu",
    )
    dynamic = reproduce.run("tomczak2018-standard", tmp_path / "dynamic", binarize="dynamic", **quick)
    assert dynamic["config"]["binarize"] == "dynamic" and dynamic["deviations"]["binarize"] == "dynamic"
    own = reproduce.run("tomczak2018-standard", tmp_path / "static", binarize="static", **quick)
    assert own["config"]["binarize"] == "static" and "binarize" not in own["deviations"]
    # the run folder's own config says how it was trained, so fit and evaluate read it back
    assert json.loads((tmp_path / "dynamic" / "config.json").read_text())["binarize"] == "dynamic"
    with pytest.raises(ConfigError, match="--binarize static differs from the run's"):
        reproduce.run(
            "tomczak2018-standard", tmp_path / "dynamic", resume=True, **{**quick, "max_passes": 2}, binarize="static"
        )


def test_adam_hyperparameters_and_burda_rates_reach_the_optimizer(mnist_dataset, tmp_path):
    config = reproduce.SETTINGS["burda2015-vae-k1"].fit_config(
        train_size=40, eval_size=50, epochs=5, data_dir=data_dir_of(mnist_dataset), out=str(tmp_path)
    )
    trainer = Trainer(config, mnist_dataset, tmp_path, torch.device("cpu"), log=lambda _: None)
    trainer.fit()
    assert [r["lr"] for r in trainer.records] == pytest.approx([1e-3, *BURDA_RATES[1:2] * 3, BURDA_RATES[2]])
    groups = trainer.optimizer.param_groups  # one torch Adam over every parameter
    assert isinstance(trainer.optimizer, torch.optim.Adam) and len(groups) == 1
    assert sum(p.numel() for p in groups[0]["params"]) == sum(p.numel() for p in trainer.vae.parameters())
    assert groups[0]["betas"] == (0.9, 0.999) and groups[0]["eps"] == 1e-4
    assert groups[0]["lr"] == pytest.approx(BURDA_RATES[2])  # after 5 passes: stage 2


def test_early_stopping_stops_after_n_epochs_without_improvement(mnist_dataset, tmp_path, monkeypatch):
    config = FitConfig(
        train_size=100,
        eval_size=50,
        latent_dim=2,
        hidden=(16,),
        batch_size=50,
        epochs=10,
        early_stopping=2,
        data_dir=data_dir_of(mnist_dataset),
        out=str(tmp_path),
    )
    config = config.replace(**data_record(mnist_dataset, config))  # as fit records the data
    trainer = Trainer(config, mnist_dataset, tmp_path, torch.device("cpu"), log=lambda _: None)
    valid = iter([-100.0, -90.0, -95.0, -91.0, -80.0])  # best at epoch 2, then two worse epochs
    evaluate = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", lambda: {**evaluate(), "valid_elbo": next(valid)})
    summary = trainer.fit()
    assert summary["epochs"] == 4 and summary["stopped"] == "early-stopping"
    assert summary["best_epoch"] == 2
    # --resume of an early-stopped run trains no further: rank 0 reads the records and decides again
    from pyro_vae.cli.fit import resolve_config
    from pyro_vae.engine.train import run

    again = run(resolve_config({}, None, str(tmp_path)), str(tmp_path))
    assert again["epochs"] == 4 and again["stopped"] == "early-stopping"


def test_max_minutes_stops_after_the_first_epoch(mnist_dataset, tmp_path):
    config = FitConfig(
        train_size=100,
        eval_size=50,
        latent_dim=2,
        hidden=(16,),
        batch_size=50,
        epochs=10,
        max_minutes=1e-6,
        data_dir=data_dir_of(mnist_dataset),
        out=str(tmp_path),
    )
    summary = Trainer(config, mnist_dataset, tmp_path, torch.device("cpu"), log=lambda _: None).fit()
    assert summary["epochs"] == 1 and summary["stopped"] == "max-minutes"


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(activation="tanh", net="conv"), "--activation applies to --net mlp"),
        (dict(lr_schedule="burda", lr_decay=0.9), "drop --lr-decay"),
        (dict(adam_beta1=1.0), "--adam-beta1 must be in [0, 1)"),
        (dict(adam_eps=0.0), "--adam-eps must be positive"),
        (dict(early_stopping=-1), "--early-stopping must be >= 0"),
    ],
)
def test_bad_literature_options_are_explained(values, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        check(FitConfig(**values))


def test_cli_errors_exit_2_without_traceback(tmp_path, capsys):
    assert reproduce_cli.main(["no-such-paper", "--out", str(tmp_path / "x")]) == 2
    assert "unknown setting 'no-such-paper'" in capsys.readouterr().err
    assert reproduce_cli.main(["--resume", str(tmp_path)]) == 2
    assert "no reproduce.json" in capsys.readouterr().err
    assert reproduce_cli.main([]) == 2
    assert "give a setting NAME" in capsys.readouterr().err


def test_config_offers_exactly_the_registered_networks_activations_inits_and_schedules():
    from pyro_vae.config import config_fields
    from pyro_vae.config_values import field_choices
    from pyro_vae.engine.optim import LR_SCHEDULES
    from pyro_vae.nets import ACTIVATIONS, DECODERS, ENCODERS, INITIALIZERS

    choices = {f.name: field_choices(f) for f in config_fields()}
    assert tuple(ENCODERS.names()) == tuple(DECODERS.names()) == choices["net"]
    assert "gated-mlp" in choices["net"]
    assert tuple(ACTIVATIONS) == choices["activation"] == ("relu", "tanh", "softplus")
    assert tuple(INITIALIZERS) == choices["init"] == ("torch", "glorot", "he")
    assert tuple(LR_SCHEDULES.names()) == choices["lr_schedule"] == ("exponential", "burda")


def test_resume_continues_the_schedule_and_keeps_the_curve(mnist_dataset, tmp_path):
    out, data_dir = tmp_path / "burda", data_dir_of(mnist_dataset)
    quick = dict(train_size=40, eval_size=50, k=4, data_dir=data_dir, device="cpu")
    reproduce.run("burda2015-vae-k1", out, budget_minutes=5, max_passes=1, **quick)
    with pytest.raises(ConfigError, match="already holds a run; continue it with --resume"):
        reproduce.run("burda2015-vae-k1", out, budget_minutes=5, max_passes=2, **quick)
    with pytest.raises(ConfigError, match="--train-size 80 differs from the run's"):
        reproduce.run(
            "burda2015-vae-k1", out, budget_minutes=5, resume=True, max_passes=2, **{**quick, "train_size": 80}
        )
    results = reproduce.run("burda2015-vae-k1", out, budget_minutes=5, resume=True, max_passes=2, **quick)
    assert results["passes_done"] == 2 and len(results["invocations"]) == 2
    assert results["final"]["images"] == 50 and results["deviations"]["eval_size"] == 50
    assert [p["passes"] for p in results["curve"]] == [1, 2]  # pass 1 ends a stage; 2 ends the run
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in metrics] == pytest.approx(BURDA_RATES[:2])  # the schedule went on


def test_resume_can_evaluate_a_subset_run_on_more_images_or_all(mnist_dataset, tmp_path):
    """--eval-size decides only the final evaluation, so a resumed run may widen it; the results
    then record the new size, or no deviation for 'all' (the whole test set)."""
    out, data_dir = tmp_path / "burda", data_dir_of(mnist_dataset)
    quick = dict(train_size=40, k=2, data_dir=data_dir, device="cpu", budget_minutes=5, max_passes=1)
    first = reproduce.run("burda2015-vae-k1", out, eval_size=30, **quick)
    assert first["final"]["images"] == 30 and first["deviations"] == {"train_size": 40, "eval_size": 30, "k": 2}
    kept = reproduce.run("burda2015-vae-k1", out, resume=True, **quick)  # none given: the run's own
    assert kept["final"]["images"] == 30 and kept["passes_done"] == 1
    wider = reproduce.run("burda2015-vae-k1", out, resume=True, eval_size=60, **quick)
    assert wider["final"]["images"] == 60 and wider["deviations"]["eval_size"] == 60
    every = reproduce.run("burda2015-vae-k1", out, resume=True, eval_size="all", **quick)
    assert "eval_size" not in every["deviations"] and every["final"]["images"] == 10_000  # MNIST's test set
    saved = json.loads((out / reproduce.RESULTS).read_text())
    assert saved["deviations"] == {"train_size": 40, "k": 2} and len(saved["invocations"]) == 4
    # and from the command line: 'all' or a number, anything else refused with exit status 2
    assert reproduce_cli.build_parser().parse_args(["--eval-size", "all"]).eval_size == "all"
    with pytest.raises(SystemExit):
        reproduce_cli.build_parser().parse_args(["--eval-size", "most"])


def test_burda_schedule_resumes_exactly_through_fit(mnist_dataset, tmp_path):
    """5 passes in one go, and 2 passes then --resume to 5: the same learning rates and the same
    training losses, epoch by epoch (the LambdaLR state and Adam's moments are in last.pt)."""
    from pyro_vae.cli.fit import resolve_config
    from pyro_vae.engine.train import run

    base = reproduce.SETTINGS["burda2015-vae-k1"].fit_config(
        train_size=40, eval_size=20, data_dir=data_dir_of(mnist_dataset), accelerator="cpu"
    )
    run(base.replace(epochs=5, out=str(tmp_path / "straight")))
    run(base.replace(epochs=2, out=str(tmp_path / "resumed")))
    run(resolve_config({"epochs": 5}, None, str(tmp_path / "resumed")), str(tmp_path / "resumed"))
    straight, resumed = (
        [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("straight", "resumed")
    )
    assert (
        [r["lr"] for r in resumed]
        == [r["lr"] for r in straight]
        == pytest.approx([1e-3, *BURDA_RATES[1:2] * 3, BURDA_RATES[2]])
    )
    assert [r["train_objective"] for r in resumed] == [r["train_objective"] for r in straight]
    checkpoint = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert checkpoint["scheduler"]["last_epoch"] == 5 and checkpoint["scheduler"]["lr_lambdas"] == [None]


def test_two_processes_stop_together_on_rank_0s_decision(mnist_dataset, tmp_path):
    """--max-minutes with 2 processes: rank 0 decides from its clock and both ranks stop after
    epoch 1 (a rank left training alone would hang in the next all-reduce: the timeout fails it)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update(PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    out = tmp_path / "two"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyro_vae.fit",
            "--train-size",
            "200",
            "--eval-size",
            "100",
            "--latent-dim",
            "2",
            "--hidden",
            "16",
            "--batch-size",
            "50",
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--epochs",
            "5",
            "--max-minutes",
            "1e-6",
            "--data-dir",
            data_dir_of(mnist_dataset),
            "--out",
            str(out),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["stopped"] == "max-minutes" and summary["processes"] == 2


def test_resume_measures_a_curve_point_whose_evaluation_was_interrupted(mnist_dataset, tmp_path, monkeypatch):
    """Stopped during the evaluation at the end of a stage (pass 4), the run's --resume measures
    that point first (its checkpoint is still that pass's), then goes on."""
    out, data_dir = tmp_path / "burda", data_dir_of(mnist_dataset)
    quick = dict(train_size=40, eval_size=50, k=4, data_dir=data_dir, device="cpu")
    evaluate = reproduce._evaluate

    def interrupted_at_pass_4(run_dir, setting, **kwargs):
        if not kwargs["final"] and json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 4:
            raise KeyboardInterrupt
        return evaluate(run_dir, setting, **kwargs)

    monkeypatch.setattr(reproduce, "_evaluate", interrupted_at_pass_4)
    with pytest.raises(KeyboardInterrupt):
        reproduce.run("burda2015-vae-k1", out, budget_minutes=5, max_passes=5, **quick)
    assert [p["passes"] for p in json.loads((out / "reproduce.json").read_text())["curve"]] == [1]
    monkeypatch.setattr(reproduce, "_evaluate", evaluate)
    results = reproduce.run("burda2015-vae-k1", out, budget_minutes=5, resume=True, max_passes=5, **quick)
    assert [p["passes"] for p in results["curve"]] == [1, 4, 5]


def test_an_interrupted_segment_keeps_its_training_time_and_passes(mnist_dataset, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) during training: reproduce.json still counts the segment's time and the
    passes its checkpoint holds, so the resumed run's totals are complete."""
    out, data_dir = tmp_path / "burda", data_dir_of(mnist_dataset)
    quick = dict(train_size=40, eval_size=50, k=4, data_dir=data_dir, device="cpu")
    real_fit = reproduce.fit_run
    timed = {}

    def interrupted_after_training(config, *args, **kwargs):
        started = time.process_time()
        real_fit(config, *args, **kwargs)  # the segment's passes are done and checkpointed ...
        while time.process_time() - started < 0.5:  # ... and some more CPU time is spent
            pass
        timed["cpu"] = time.process_time() - started
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "fit_run", interrupted_after_training)
    with pytest.raises(KeyboardInterrupt):
        reproduce.run("burda2015-vae-k1", out, budget_minutes=5, max_passes=3, **quick)
    saved = json.loads((out / reproduce.RESULTS).read_text())
    assert saved["passes_done"] == 1  # the first segment ends at the curve point after pass 1
    assert saved["training_cpu_seconds"] >= timed["cpu"] and saved["training_seconds"] >= timed["cpu"]
    monkeypatch.setattr(reproduce, "fit_run", real_fit)
    results = reproduce.run("burda2015-vae-k1", out, budget_minutes=5, resume=True, max_passes=3, **quick)
    assert results["passes_done"] == 3 and [p["passes"] for p in results["curve"]] == [1, 3]
    assert results["training_cpu_seconds"] > saved["training_cpu_seconds"]
