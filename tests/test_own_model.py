"""A model of one's own by import path (``--model module:Class``) and the built-in two-layer
``--model hvae``: trained, resumed, evaluated, generated and loaded like the built-in kinds, in 1
and 2 processes, and refused before training where it cannot work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyro_vae
from pyro_vae.cli.evaluate import main as evaluate_main
from pyro_vae.cli.fit import main as fit_main
from pyro_vae.cli.generate import main as generate_main
from pyro_vae.errors import InputError
from pyro_vae.variants.program import program_problems

pytest_plugins = ["data_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES, TESTS = ROOT / "examples", ROOT / "tests"
TIMEOUT_S = 300


@pytest.fixture
def data_dir(mnist_dataset) -> str:
    return str(Path(mnist_dataset.root).parent.parent)  # root is <data dir>/MNIST/raw


@pytest.fixture
def on_path(monkeypatch):
    """examples/ and tests/ importable, as a user's own package would be."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.syspath_prepend(str(TESTS))


def small(data_dir, out, *extra, epochs=1) -> list[str]:
    return [
        "--data-dir",
        data_dir,
        "--train-size",
        "256",
        "--eval-size",
        "100",
        "--batch-size",
        "64",
        "--epochs",
        str(epochs),
        "--out",
        str(out),
        *extra,
    ]


def states_equal(a: Path, b: Path) -> None:
    left = torch.load(a, weights_only=True)["networks"]
    right = torch.load(b, weights_only=True)["networks"]
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


def test_hvae_trains_and_evaluate_reports_active_units_per_layer(data_dir, tmp_path):
    out = tmp_path / "hvae"
    assert (
        fit_main(
            [
                "--model",
                "hvae",
                "--latent-dim",
                "16,8",
                "--hidden",
                "32,32",
                "--train-size",
                "512",
                "--eval-size",
                "100",
                "--epochs",
                "1",
                "--data-dir",
                data_dir,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["latent_dim"] == [16, 8]
    assert evaluate_main([str(out), "--k", "50", "--limit", "100", "--no-progress"]) == 0
    test = json.loads((out / "eval.json").read_text())["test"]
    assert test["latent_dim_per_site"] == {"z1": 16, "z2": 8}
    assert set(test["active_units_per_site"]) == {"z1", "z2"}
    assert all(0 <= test["active_units_per_site"][s] <= test["latent_dim_per_site"][s] for s in ("z1", "z2"))
    assert test["log_px_mean"] >= test["elbo_mean"]  # log p_K is the tighter bound on the same samples
    model = pyro_vae.load(out).model
    assert [layer.out_features for layer in model.decoder.modules() if isinstance(layer, torch.nn.Linear)][-1] == 784


def test_hvae_has_burdas_two_layer_architecture():
    from pyro_vae.config import FitConfig
    from pyro_vae.variants import build_vae, checked

    config = checked(FitConfig(model="hvae", latent_dim=(100, 50), hidden=(100, 100), activation="tanh"))
    vae = build_vae(config, (1, 28, 28))

    def shapes(module):
        return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, torch.nn.Linear)]

    guide, model = shapes(vae.guide), shapes(vae.model)
    # q(z1|x): 784-100-100 then the loc and scale heads of 100; q(z2|z1): 100-50-50 then heads of 50
    assert guide == [(784, 100), (100, 100), (100, 100), (100, 100), (100, 50), (50, 50), (50, 50), (50, 50)]
    assert sorted(model) == sorted([(50, 50), (50, 50), (50, 100), (50, 100), (100, 100), (100, 100), (100, 784)])
    assert {type(m).__name__ for m in vae.modules()} >= {"Tanh"} and "ReLU" not in {
        type(m).__name__ for m in vae.modules()
    }


def test_an_own_model_file_trains_resumes_evaluates_generates_and_loads(data_dir, tmp_path, on_path):
    model = ["--model", "two_layer_vae:TwoLayerVAE"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert fit_main(small(data_dir, straight, *model, epochs=2)) == 0
    assert fit_main(small(data_dir, resumed, *model, epochs=1)) == 0
    assert fit_main(["--resume", str(resumed), "--epochs", "2"]) == 0
    states_equal(straight / "last.pt", resumed / "last.pt")  # resumed bit for bit
    assert json.loads((straight / "config.json").read_text())["model"] == "two_layer_vae:TwoLayerVAE"
    # a fresh process rebuilds the model from config.json's import path
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(EXAMPLES), str(ROOT)]), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "pyro_vae.evaluate", str(straight), "--k", "20", "--limit", "50", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    test = json.loads((straight / "eval.json").read_text())["test"]
    assert set(test["active_units_per_site"]) == {"z1", "z2"}
    assert generate_main([str(straight), "--n", "9"]) == 0 and (straight / "generated.png").is_file()
    vae = pyro_vae.load(straight)
    assert vae.sample(4).shape == (4, 1, 28, 28)
    assert {k: tuple(v.shape) for k, v in vae.posterior_means(torch.zeros(3, 1, 28, 28)).items()} == {
        "z1": (3, 16),
        "z2": (3, 8),
    }


def test_a_cluster_enumerated_in_the_model_trains_with_enum_and_is_summed_out(data_dir, tmp_path, on_path, capsys):
    out = tmp_path / "gmm"
    assert fit_main(small(data_dir, out, "--model", "gmm_vae:GMMVAE")) == 2
    assert "--elbo trace cannot sum out the discrete site 'c'" in capsys.readouterr().err
    assert not (out / "metrics.jsonl").exists()  # refused before training
    assert fit_main(small(data_dir, out, "--model", "gmm_vae:GMMVAE", "--elbo", "enum")) == 0
    vae = pyro_vae.load(out)
    x = (torch.rand(8, 1, 28, 28) > 0.5).float()
    result = vae.log_px(x, k=30)
    summary = result.summary()
    assert summary["active_units_per_site"]["c"] is None  # a discrete site, summed out
    assert all(torch.isfinite(torch.as_tensor(result.log_px)))


def test_an_elbo_of_ones_own_by_import_path_is_recorded(data_dir, tmp_path, on_path):
    out = tmp_path / "own-elbo"
    assert fit_main(small(data_dir, out, "--model", "gmm_vae:GMMVAE", "--elbo", "pyro.infer:TraceEnum_ELBO")) == 0
    assert json.loads((out / "config.json").read_text())["elbo"] == "pyro.infer:TraceEnum_ELBO"


def test_python_fit_records_the_class_by_its_import_path(data_dir, tmp_path, on_path):
    from two_layer_vae import TwoLayerVAE

    run = pyro_vae.fit(
        model=TwoLayerVAE,
        data_dir=data_dir,
        train_size=256,
        eval_size=100,
        batch_size=64,
        epochs=1,
        out=str(tmp_path / "python"),
    )
    assert run.config.model == "two_layer_vae:TwoLayerVAE"
    assert run.vae.sample(2).shape == (2, 1, 28, 28)


@pytest.mark.parametrize(
    "name, elbo, message",
    [
        ("OutsidePlate", "trace", "the model's site 'z2' is outside the data plate"),
        ("GuideMissesASite", "trace", "the guide has no site 'z2', which the model samples"),
        ("DiscreteGuideSite", "iwae", "--elbo iwae needs a reparameterized guide, but the guide's site 'c'"),
        ("NoImages", "trace", "the model observes no site 'x'"),
    ],
)
def test_what_cannot_train_is_named_before_training(name, elbo, message, data_dir, tmp_path, on_path, capsys):
    import own_models

    made = getattr(own_models, name)((1, 28, 28))
    found = program_problems(made.model, made.guide, torch.zeros(2, 1, 28, 28), None, elbo)
    assert any(message in f for f in found), found
    out = tmp_path / name
    assert fit_main(small(data_dir, out, "--model", f"own_models:{name}", "--elbo", elbo)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "metrics.jsonl").exists()


def test_a_class_without_model_and_guide_programs_is_refused(data_dir, tmp_path, on_path, capsys):
    assert fit_main(small(data_dir, tmp_path / "r", "--model", "own_models:NotPrograms")) == 2
    assert "must have the attributes `model` and `guide`" in capsys.readouterr().err


def test_meanfield_is_refused_for_a_program(data_dir, tmp_path, on_path, capsys):
    assert (
        fit_main(small(data_dir, tmp_path / "r", "--model", "hvae", "--latent-dim", "4,2", "--elbo", "meanfield")) == 2
    )
    assert "--elbo meanfield takes each latent site's KL in closed form" in capsys.readouterr().err


def test_an_own_model_trains_with_the_importance_weighted_bound(data_dir, tmp_path, on_path):
    out = tmp_path / "iwae"
    assert (
        fit_main(small(data_dir, out, "--model", "two_layer_vae:TwoLayerVAE", "--elbo", "iwae", "--particles", "3"))
        == 0
    )
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["train_objective"] < 600 and record["test_elbo"] > -600  # finite, and learning from -543


def test_built_in_pieces_are_refused_for_an_own_model(data_dir, tmp_path, on_path, capsys):
    assert fit_main(small(data_dir, tmp_path / "r", "--model", "two_layer_vae:TwoLayerVAE", "--prior", "mog")) == 2
    assert "defines its own p(z) and q(z|x): --prior" in capsys.readouterr().err


@pytest.mark.slow
def test_an_own_model_in_two_processes_takes_the_one_process_steps(data_dir, tmp_path):
    """Without noise (point-mass guide sites), the 2-process run's parameters equal the 1-process
    run's up to the order of the gradient sums."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT)]), OMP_NUM_THREADS="1")
    outs = {}
    for devices in ("1", "2"):
        outs[devices] = tmp_path / f"p{devices}"
        args = small(
            data_dir,
            outs[devices],
            "--model",
            "own_models:PointMassTwoLayer",
            "--devices",
            devices,
            "--accelerator",
            "cpu",
            epochs=2,
        )
        done = subprocess.run(
            [sys.executable, "-m", "pyro_vae.fit", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    one = torch.load(outs["1"] / "last.pt", weights_only=True)
    two = torch.load(outs["2"] / "last.pt", weights_only=True)
    assert one["step"] == two["step"]
    for key, value in one["networks"].items():
        assert torch.allclose(value, two["networks"][key], atol=1e-5), key


def test_an_own_model_that_takes_labels_is_given_them_and_scores_log_px_given_y(data_dir, tmp_path, on_path):
    out = tmp_path / "labelled"
    assert fit_main(small(data_dir, out, "--model", "own_models:LabelledTwoLayer")) == 0
    vae = pyro_vae.load(out)
    x = (torch.rand(6, 1, 28, 28) > 0.5).float()
    with pytest.raises(InputError, match="pass y"):
        vae.log_px(x, k=5)
    given = vae.log_px(x, k=5, y=torch.arange(6) % 10)
    assert given.log_px.shape == (6,)
    assert vae.sample(4, label=3).shape == (4, 1, 28, 28)
