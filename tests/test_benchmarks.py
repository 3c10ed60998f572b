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


@pytest.mark.slow
def test_train_speed_with_compile_times_four_steps(mnist_dataset, tmp_path):
    """--compile: the compiled engine step, the eager one, and the hand-written step eager and
    compiled, alternating (compiling takes a minute or more on a CPU)."""
    import torch

    from pyro_vae.compiled_elbo import compiler_problem

    if compiler_problem(torch.device("cpu")) is not None:
        pytest.skip("inductor cannot compile on this CPU (no C++ compiler)")
    result = _run(
        "train_speed.py",
        ["--size", "tiny", "--steps", "2", "--blocks", "1", "--train-size", "32", "--compile"],
        tmp_path / "train.json",
        mnist_dataset,
    )
    assert result["config"]["compile"] is True
    arms = {"pyro_vae", "pyro_vae_eager", "hand_written", "hand_written_compiled"}
    assert set(result["median_ms_per_step"]) == set(result["ratios_over_hand_written"]) == arms
    median = result["median_ms_per_step"]
    assert result["compiled_over_eager"] == pytest.approx(median["pyro_vae"] / median["pyro_vae_eager"])


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
    # one untimed pass of each first (the first pass of a process faults its heap in), recorded apart
    assert result["config"]["warmup"] == 1
    for field in ("warmup_process_seconds", "warmup_minor_page_faults"):
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


def test_ddp_speed_writes_its_fields(mnist_dataset, tmp_path):
    """Both loops at 1 and 2 processes over gloo, one short epoch each (the smallest run)."""
    out = tmp_path / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = ["--batch-sizes", "16", "--steps", "2", "--epochs", "1", "--warmup", "0", "--timeout", "300"]
    script = str(ROOT / "benchmarks" / "ddp_speed.py")
    data = ["--data-dir", data_dir_of(mnist_dataset), "--out", str(out)]
    done = subprocess.run([sys.executable, script, *args, *data], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert MACHINE_FIELDS - {"ratio_over_hand_written"} <= set(result)
    assert [(job["processes"], job["batch_size"]) for job in result["jobs"]] == [(1, 16), (2, 16)]
    assert result["jobs"][1]["ddp"]["static_graph"] and result["jobs"][1]["ddp"]["gradient_as_bucket_view"]
    summary = result["batch_sizes"]["16"]
    for world in ("1", "2"):
        median = summary["median_images_per_s"][world]
        assert set(median) == {"engine", "plain_ddp"} and min(median.values()) > 0
        assert summary["ratio_engine_over_plain_ddp"][world] == pytest.approx(median["engine"] / median["plain_ddp"])
    assert set(summary["ratio_2_over_1_processes"]) == {"engine", "plain_ddp"}


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


def test_paired_runs_scores_as_evaluate_does_and_pairs_the_images(mnist_dataset, tmp_path, capsys):
    """benchmarks/paired_runs.py: each run's mean equals ``evaluate``'s on the same images, K and
    seed; a run against itself differs by exactly 0; the paired error is std(d)/sqrt(n)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from paired_runs import main as paired_main
        from paired_runs import paired_summary
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import torch
    from test_train import cli_args

    from pyro_vae.cli.evaluate import main as evaluate_main
    from pyro_vae.cli.fit import main as fit_main

    runs = [tmp_path / "a", tmp_path / "b"]
    for seed, run in enumerate(runs):
        assert fit_main(cli_args(mnist_dataset, run, epochs=1, seed=seed)) == 0
    options = ["--k", "20", "--limit", "40", "--batch-size", "20"]
    out = tmp_path / "paired.json"
    picture = tmp_path / "paired.png"
    done = subprocess.run(  # as a script: --jobs 2 scores each run in a process of its own
        [sys.executable, str(ROOT / "benchmarks" / "paired_runs.py"), str(runs[0]), str(runs[1]), *options]
        + ["--jobs", "2", "--out", str(out), "--plot", str(picture)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert picture.stat().st_size > 1000
    paired = json.loads(out.read_text())
    for run, key in zip(runs, ("mean_a", "mean_b")):
        args = [str(run), *options, "--checkpoint", "last", "--curve-images", "0", "--no-progress"]
        assert evaluate_main(args) == 0
        assert paired[key] == pytest.approx(
            json.loads((run / "eval.json").read_text())["test"]["log_px_mean"], rel=1e-9
        )
    assert paired["difference_b_minus_a"] == pytest.approx(paired["mean_b"] - paired["mean_a"], abs=1e-9)
    assert paired["difference_b_minus_a"] != 0
    assert paired_main([str(runs[0]), str(runs[0]), *options, "--out", str(out)]) == 0
    itself = json.loads(out.read_text())
    assert itself["difference_b_minus_a"] == 0 and itself["paired_stderr"] == 0
    a, b = torch.tensor([1.0, 2.0, 4.0, 7.0]), torch.tensor([2.0, 2.0, 5.0, 9.0])
    summary = paired_summary(a, b)
    assert summary["difference_b_minus_a"] == pytest.approx(1.0)
    assert summary["paired_stderr"] == pytest.approx(float(torch.tensor([1.0, 0, 1, 2]).std()) / 2)
    assert summary["b_better_on_fraction_of_images"] == 0.75
    capsys.readouterr()


def test_prior_guide_steps_writes_its_fields_and_both_inverses_agree(tmp_path):
    out = tmp_path / "steps.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "prior_guide_steps.py"),
            "--pairs",
            "standard+diag,vamp+diag,vamp+iaf/none",
            "--repeats",
            "1",
            "--density-components",
            "2",
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
    assert set(result["pairs"]) == {"standard + diag", "vamp + diag", "vamp + iaf (none)"}
    assert result["pairs"]["vamp + iaf (none)"]["flows_see_x"] is False
    assert result["pairs"]["vamp + diag"]["flows_see_x"] is None
    vamp = result["pairs"]["vamp + diag"]
    assert vamp["components"] == 500 and vamp["ratio_to_vamp_diag"] == 1.0
    assert vamp["epoch_cpu_minutes_estimate"] == pytest.approx(391 * vamp["median_cpu_seconds_per_step"] / 60)
    density = result["density"]
    assert density["components"] == 2 and set(density["median_cpu_seconds"]) == {"one_pass", "pyro_inverse"}
    assert density["max_abs_difference_nats"] < 1e-3  # the two inverses agree


def test_gradient_snr_writes_its_fields_and_reuses_its_trained_model(mnist_dataset, tmp_path):
    """A tiny run: the model trained into --run, SNRs for two estimators at two K, a picture; DReG's
    decoder gradient is IWAE's for every draw, so their decoder SNRs are equal and their encoder
    SNRs are not. A second call reuses the trained model instead of training again."""
    run, picture = tmp_path / "run", tmp_path / "snr.png"
    args = ["--epochs", "1", "--train-size", "100", "--particles", "1,8", "--estimators", "iwae,iwae-dreg"]
    args += ["--estimates", "6", "--images", "2", "--run", str(run), "--plot", str(picture)]

    def call(out: Path) -> dict:
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "gradient_snr.py"), *args, "--out", str(out)]
            + ["--data-dir", data_dir_of(mnist_dataset)],
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(out.read_text())

    result = call(tmp_path / "first.json")
    assert MACHINE_FIELDS - {"ratio_over_hand_written"} <= set(result) and result["threads"] == 1
    assert result["config"]["reused_run"] is False and result["config"]["training"]["hidden"] == [200, 200]
    rows = {(r["estimator"], r["particles"]): r for r in result["rows"]}
    assert set(rows) == {(e, k) for e in ("iwae", "iwae-dreg") for k in (1, 8)}
    for k in (1, 8):
        iwae, dreg = rows["iwae", k], rows["iwae-dreg", k]
        assert dreg["decoder"]["mean_snr"] == pytest.approx(iwae["decoder"]["mean_snr"], rel=1e-4)
        assert dreg["encoder"]["mean_snr"] != pytest.approx(iwae["encoder"]["mean_snr"], rel=1e-2)
        for net in ("encoder", "decoder"):
            row = iwae[net]
            assert row["mean_snr"] > 0 and row["median_snr"] > 0
            assert 0 <= row["always_zero_parameters"] < row["parameters"]
    assert picture.stat().st_size > 0
    stamp = (run / "last.pt").stat().st_mtime_ns
    assert call(tmp_path / "second.json")["config"]["reused_run"] is True
    assert (run / "last.pt").stat().st_mtime_ns == stamp


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
