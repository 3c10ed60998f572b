"""Smoke tests of the benchmarks' fixed interface: each runs for a few steps as a subprocess (one
torch thread) and writes a JSON with the fields the docs quote. Times are not checked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import data_dir_of

ROOT = Path(__file__).resolve().parent.parent
MACHINE_FIELDS = {
    "command",
    "date",
    "device",
    "threads",
    "torch",
    "pyro",
    "load_average_at_start",
    "load_average_at_end",
    "ratio_over_hand_written",
}


def _run(script: str, args: list[str], out: Path, dataset) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / script),
            *args,
            "--out",
            str(out),
            "--data-dir",
            data_dir_of(dataset),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert MACHINE_FIELDS <= set(result), MACHINE_FIELDS - set(result)
    assert result["threads"] == 1
    assert result["ratio_over_hand_written"] > 0
    return result


@pytest.mark.parametrize("size,extra", [("tiny", ["--jit"]), ("default", ["--elbo", "meanfield"])])
def test_train_speed_writes_its_fields(mnist_dataset, tmp_path, size, extra):
    result = _run(
        "train_speed.py",
        ["--size", size, "--steps", "2", "--blocks", "1", "--train-size", "200", *extra],
        tmp_path / "train.json",
        mnist_dataset,
    )
    assert result["config"]["size"] == size
    assert result["config"]["jit"] == ("--jit" in extra)
    assert set(result["median_ms_per_step"]) == {"pyro_vae", "hand_written"}
    assert result["ratio_over_hand_written"] == pytest.approx(
        result["median_ms_per_step"]["pyro_vae"] / result["median_ms_per_step"]["hand_written"]
    )


def test_eval_speed_writes_its_fields(mnist_dataset, tmp_path):
    result = _run(
        "eval_speed.py", ["--k", "4", "--images", "20", "--repeats", "1"], tmp_path / "eval.json", mnist_dataset
    )
    assert result["config"]["k"] == 4 and result["config"]["images"] == 20
    assert set(result["median_seconds"]) == {"pyro_vae", "hand_written"}
    assert set(result["achieved_gflop_per_s"]) == {"pyro_vae", "hand_written"}
    assert result["matmul_gflop_per_s"] > 0
    for field in ("process_seconds", "user_seconds", "system_seconds", "minor_page_faults"):
        assert {name: len(v) for name, v in result[field].items()} == {"pyro_vae": 1, "hand_written": 1}
    assert result["ratio_process_time"] == pytest.approx(
        result["median_process_seconds"]["pyro_vae"] / result["median_process_seconds"]["hand_written"]
    )
    assert result["process_seconds"]["pyro_vae"][0] == pytest.approx(
        result["user_seconds"]["pyro_vae"][0] + result["system_seconds"]["pyro_vae"][0]
    )
    # the networks' FLOPs: 20 images, encoder once each, decoder 4 times each (784-512-512-32 MLP)
    encoder = 2 * (784 * 512 + 512 * 512 + 2 * 512 * 32)
    decoder = 2 * (32 * 512 + 512 * 512 + 512 * 784)
    assert result["network_gflop"] == pytest.approx(20 * (encoder + 4 * decoder) / 1e9, rel=0.01)


def test_priors_guides_reuses_only_a_run_trained_as_its_fit_command_would(tmp_path):
    """--reuse scores runs trained elsewhere (notebook 02's full mode runs the same fit command):
    one whose config.json differs from fit's defaults plus the benchmark's flags is refused."""
    import importlib.util
    from types import SimpleNamespace

    from pyro_vae.config import FitConfig
    from pyro_vae.variants import resolve_defaults

    spec = importlib.util.spec_from_file_location("priors_guides", ROOT / "benchmarks" / "priors_guides.py")
    priors_guides = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(priors_guides)
    args = SimpleNamespace(
        epochs=20, latent_dim=40, warmup_epochs=5.0, seed=0, train_size=None, device="auto", data_dir=None
    )
    run = tmp_path / "vamp-diag"
    run.mkdir()
    # as notebook 02 writes it: the same flags, --prior-components 500 spelled out, --device cpu
    trained = FitConfig(
        prior="vamp",
        guide="diag",
        epochs=20,
        latent_dim=40,
        warmup_epochs=5.0,
        prior_components=500,
        accelerator="cpu",
        out=str(run),
    )
    (run / "config.json").write_text(json.dumps(resolve_defaults(trained).to_dict()))  # as fit records it

    def check(prior, guide, args):
        priors_guides.check_reused_run(run, priors_guides.fit_command(prior, guide, args, run))

    check("vamp", "diag", args)  # accepted
    with pytest.raises(SystemExit, match="not trained as this benchmark.*latent_dim: 40, not 32"):
        check("vamp", "diag", SimpleNamespace(**{**vars(args), "latent_dim": 32}))
    with pytest.raises(SystemExit, match="prior: 'vamp', not 'standard'"):
        check("standard", "diag", args)


def test_vamp_density_writes_its_fields_and_both_paths_agree(tmp_path):
    out = tmp_path / "vamp.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "vamp_density.py"),
            "--points",
            "300",
            "--batch",
            "20",
            "--repeats",
            "1",
            "--out",
            str(out),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert MACHINE_FIELDS - {"ratio_over_hand_written"} <= set(result) and result["threads"] == 1
    assert result["config"]["components"] == 500 and result["config"]["latent_dim"] == 40
    for workload in ("evaluation", "training"):
        median = result[workload]["median_seconds"]
        assert set(median) == {"closed_form", "elementwise"}
        assert result[workload]["ratio_elementwise_over_closed_form"] == pytest.approx(
            median["elementwise"] / median["closed_form"]
        )
    assert result["max_abs_difference_nats"] < 1e-3  # float32 rounding of the elementwise path only


def test_own_data_bits_writes_one_row_per_images_and_epochs(tmp_path):
    out = tmp_path / "bits.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "own_data_bits.py"), "--images", "40", "--epochs", "1", "2"]
        + ["--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert MACHINE_FIELDS - {"ratio_over_hand_written"} <= set(result) and result["threads"] == 1
    assert [(r["images"], r["epochs"]) for r in result["runs"]] == [(40, 1), (40, 2)]
    for row in result["runs"]:
        assert 0 < row["test_bits_per_dim"] < 16 and row["run_cpu_seconds"] > 0
    assert result["runs"][0]["training_seconds_so_far"] < result["runs"][1]["training_seconds_so_far"]
