"""python -m pyro_vae.evaluate and fit --eval-k on a small real MNIST run."""

import json
import math

import pytest
from PIL import Image
from test_train import cli_args

from pyro_vae.cli.evaluate import main as evaluate_main
from pyro_vae.cli.fit import main as fit_main


@pytest.fixture(scope="module")
def small_run(mnist_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun") / "run"
    assert fit_main(cli_args(mnist_dataset, out, epochs=2)) == 0
    return out


def test_evaluate_writes_table_json_and_pictures(small_run, capsys):
    assert (
        evaluate_main(
            [
                str(small_run),
                "--k",
                "50",
                "--limit",
                "60",
                "--batch-size",
                "30",
                "--curve-images",
                "20",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "test set: one fixed Bernoulli binarization, seed 0" in out
    for row in ("log p_K(x)", "ESS mean / min", "k-hat > 0.7", "active units"):
        assert row in out
    entry = json.loads((small_run / "eval.json").read_text())["test"]
    assert entry["n_images"] == 60 and entry["k"] == 50
    # the importance-weighted estimate is not below the ELBO on the same samples
    assert entry["log_px_mean"] >= entry["elbo_mean"] and entry["gap_mean"] >= 0
    assert 1 <= entry["ess_mean"] <= 50 and 0 <= entry["khat_share_above_0.7"] <= 1
    assert 0 <= entry["active_units"] <= 4
    # the verdict (issue 26 point 1): a string when ESS or k-hat are past their thresholds, else None
    assert "verdict" in entry
    if entry["verdict"] is not None:
        assert "verdict" in out and "still a stochastic lower bound" in " ".join(out.split())
    assert entry["log_px_against_k"]["ks"] == [1, 10, 50]
    curve = entry["log_px_against_k"]["log_px_mean"]
    assert curve[0] <= curve[-1]  # nested prefixes: more samples, a tighter bound (here surely)
    for name in ("khat_test.png", "log_px_vs_k_test.png"):
        with Image.open(small_run / name) as image:
            assert image.format == "PNG" and image.size[0] > 200
    # a second split is merged into eval.json, not written over it
    assert (
        evaluate_main(
            [str(small_run), "--k", "5", "--split", "valid", "--limit", "10", "--curve-images", "0", "--no-progress"]
        )
        == 0
    )
    assert set(json.loads((small_run / "eval.json").read_text())) == {"test", "valid"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--k", "0"], "--k must be at least 1, got 0"),
        (["--split", "dev"], "--split 'dev' does not exist; choose one of: train, valid, test"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_evaluate_bad_input(small_run, args, message, capsys):
    assert evaluate_main([str(small_run), *args, "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_evaluate_run_folder_without_checkpoint(tmp_path, capsys):
    assert evaluate_main([str(tmp_path), "--no-progress"]) == 2
    assert "no config.json there" in capsys.readouterr().err


def test_evaluate_batch_too_large_for_memory(small_run, capsys):
    assert (
        evaluate_main([str(small_run), "--k", "5000", "--batch-size", "10000", "--memory-mb", "64", "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err
    assert "use --batch-size" in err and "or a larger --memory-mb" in err


def test_fit_eval_k_runs_the_evaluation(mnist_dataset, tmp_path):
    out = tmp_path / "run"
    assert fit_main(cli_args(mnist_dataset, out, epochs=1, eval_size=40, eval_k=20)) == 0
    entry = json.loads((out / "eval.json").read_text())["test"]
    assert entry["n_images"] == 40 and entry["k"] == 20 and math.isfinite(entry["log_px_mean"])


def test_help_states_the_defaults_cost_and_outputs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "K = 5000 on all 10,000 test images) took 23.5 min on a 2-core" in text
    for written in ("writes into RUN_DIR: eval.json", "khat_SPLIT.png", "log_px_vs_k_SPLIT.png"):
        assert written in text
    # how to read ESS and k-hat (issue 26 point 1)
    assert "ESS: how many of the K samples effectively carry an image's estimate" in text
    assert "k-hat (PSIS, Vehtari et al.): below 0.5 reliable, 0.5-0.7 slow to converge, above 0.7 unreliable" in text
