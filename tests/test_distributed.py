"""Several processes on the CPU over gloo, each job a subprocess with a timeout (a hang fails
instead of stalling the suite), on a few hundred real MNIST images with tiny networks:

(a) both ranks hold identical parameters after every step; (b) 2 processes match 1 process over
the same global batches: step by step for an objective that draws no noise (z at the guide's
mean), and in distribution otherwise; (c) only rank 0 writes files and prints; (d) an exception
on rank 1 ends both processes with its message; (e) torchrun with two nodes of one process on
localhost trains and resumes; (g) that resumed 2-process run equals the uninterrupted one bit for
bit; ``evaluate --devices 2`` gives one process's numbers; M2's two labelled schedules in 2
processes take 1 process's steps, and so do iwae-dreg, piwae, stl and ciwae with each particle's
noise shared by every process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import data_dir_of

from pyro_vae.run_lock import LOCK_NAME

ROOT = Path(__file__).resolve().parent.parent
HELPER = Path(__file__).resolve().parent / "distributed_helper.py"
COLLECTIVES_HELPER = Path(__file__).resolve().parent / "collectives_helper.py"
TIMEOUT_S = 300  # per job: a few seconds of work, most of it imports on a loaded 2-core machine
RUN = [
    "--train-size",
    "300",
    "--eval-size",
    "100",
    "--latent-dim",
    "2",
    "--hidden",
    "32",
    "--batch-size",
    "50",
    "--accelerator",
    "cpu",
]
EXPECTED_FILES = {
    "config.json",
    "metrics.jsonl",
    "last.pt",
    "best.pt",
    "summary.json",
    "curves.png",
    "samples.png",
    "reconstructions.png",
    "interpolation.png",
    "latent_map.png",
    "latent_grid.png",
    "latent_posterior_grid.png",
}


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def job(args: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` (from the repository root); a hang fails the test at ``timeout``."""
    try:
        return subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"python {' '.join(args)} did not end within {timeout} s:\n{e.stdout}\n{e.stderr}")


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def networks(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["networks"]


@pytest.fixture(scope="module")
def runs(mnist_dataset, tmp_path_factory):
    """The jobs the tests below read: a 2-process CLI run and a 1-process one of the same config,
    the instrumented helper with no noise in 1 and 2 processes, and the helper failing on rank 1."""
    base = tmp_path_factory.mktemp("distributed")
    data = ["--data-dir", data_dir_of(mnist_dataset)]
    out = {"base": base}
    out["two"] = ok(
        job(["-m", "pyro_vae.fit", *RUN, *data, "--epochs", "2", "--devices", "2", "--out", str(base / "two")])
    )
    from pyro_vae.cli.fit import main

    assert main([*RUN, *data, "--epochs", "2", "--out", str(base / "one")]) == 0  # 1 process: in this one
    for devices in ("1", "2"):
        ok(
            job(
                [
                    str(HELPER),
                    *data,
                    "--devices",
                    devices,
                    "--deterministic",
                    "--out",
                    str(base / f"det{devices}"),
                    "--log-dir",
                    str(base / f"det{devices}_log"),
                ]
            )
        )
    return out


def rank_logs(base: Path, name: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((base / f"{name}_log").glob("rank*.json"))]


def test_a_both_ranks_hold_identical_parameters_after_every_step(runs):
    rank0, rank1 = rank_logs(runs["base"], "det2")
    assert rank0["world"] == rank1["world"] == 2
    assert len(rank0["steps"]) == 2 * 6  # 2 epochs of 300 images in global batches of 50
    assert [s["params"] for s in rank0["steps"]] == [s["params"] for s in rank1["steps"]]
    assert len({s["params"] for s in rank0["steps"]}) == len(rank0["steps"])  # and they moved every step


def test_b_two_processes_take_one_process_steps_without_noise(runs):
    (one,), (two, _) = rank_logs(runs["base"], "det1"), rank_logs(runs["base"], "det2")
    assert [s["step"] for s in one["steps"]] == [s["step"] for s in two["steps"]]
    # the same global batches and the same averaged gradients: the same losses, step by step, to float precision
    assert [s["loss"] for s in two["steps"]] == pytest.approx([s["loss"] for s in one["steps"]], rel=1e-5)
    for name, value in one["params"].items():
        assert torch.allclose(torch.tensor(two["params"][name]), torch.tensor(value), atol=1e-5), name


def test_b_two_processes_match_one_in_distribution(runs):
    """With noise (z drawn per process) the runs differ, but not in what they learn: after a short
    run the held-out ELBO of 2 processes is within 3 nats of 1 process's (the spread of reseeded
    1-process runs of this size is about 1 nat)."""
    one = json.loads((runs["base"] / "one" / "summary.json").read_text())["final"]
    two = json.loads((runs["base"] / "two" / "summary.json").read_text())["final"]
    assert two["test_elbo"] == pytest.approx(one["test_elbo"], abs=3.0)
    assert two["test_elbo"] > -540  # untrained: about -543


LABELLED_STEPS = ("paired", "interleaved")
ESTIMATORS = (("iwae-dreg", "piwae"), ("stl", "ciwae"))


@pytest.fixture(scope="module")
def m2_runs(mnist_dataset, tmp_path_factory) -> Path:
    """The helper's M2 runs without noise, both schedules one after the other, in 1 and in 2 processes."""
    base = tmp_path_factory.mktemp("m2")
    schedules = [arg for schedule in LABELLED_STEPS for arg in ("--m2", schedule)]
    for devices in ("1", "2"):
        ok(
            job(
                [
                    str(HELPER),
                    "--data-dir",
                    data_dir_of(mnist_dataset),
                    "--devices",
                    devices,
                    "--deterministic",
                    *schedules,
                    "--out",
                    str(base / f"m2_{devices}"),
                    "--log-dir",
                    str(base / f"m2_{devices}_log"),
                ]
            )
        )
    return base


@pytest.mark.parametrize("labelled_steps", LABELLED_STEPS)
def test_b_m2_in_two_processes_takes_one_process_steps_without_noise(m2_runs, labelled_steps):
    """M2 with 100 labels, its label enumerated and z at the guide's mean: the labelled and
    unlabelled batches of both schedules are split across 2 processes so that they take the
    1-process run's steps (the ``kingma2014-m2-100`` setting interleaves)."""
    (one,) = [json.loads(p.read_text()) for p in sorted((m2_runs / "m2_1_log" / labelled_steps).glob("rank*.json"))]
    two, other = [json.loads(p.read_text()) for p in sorted((m2_runs / "m2_2_log" / labelled_steps).glob("rank*.json"))]
    assert [s["params"] for s in two["steps"]] == [s["params"] for s in other["steps"]]
    # 2 epochs of 200 unlabelled images in batches of 50, each step with labelled images alongside
    # (paired), or the 100 labelled ones in steps of their own between them (interleaved)
    assert len(one["steps"]) == len(two["steps"]) == {"paired": 8, "interleaved": 12}[labelled_steps]
    assert [s["loss"] for s in two["steps"]] == pytest.approx([s["loss"] for s in one["steps"]], rel=1e-5)
    assert "classifier" in " ".join(one["params"])  # q(y|x) was trained too
    for name, value in one["params"].items():
        assert torch.allclose(torch.tensor(two["params"][name]), torch.tensor(value), atol=1e-5), name


@pytest.fixture(scope="module")
def estimator_runs(mnist_dataset, tmp_path_factory) -> Path:
    """The helper's runs of every estimator of ``ESTIMATORS`` with shared particle noise, one after
    the other, in 1 and in 2 processes."""
    base = tmp_path_factory.mktemp("estimators")
    estimators = [arg for names in ESTIMATORS for name in names for arg in ("--elbo", name)]
    for devices in ("1", "2"):
        ok(
            job(
                [
                    str(HELPER),
                    "--data-dir",
                    data_dir_of(mnist_dataset),
                    "--devices",
                    devices,
                    "--shared-noise",
                    *estimators,
                    "--particles",
                    "4",
                    "--iw-bounds",
                    "2",
                    "--epochs",
                    "1",
                    "--out",
                    str(base / f"est{devices}"),
                    "--log-dir",
                    str(base / f"est{devices}_log"),
                ]
            )
        )
    return base


@pytest.mark.parametrize(
    "names", [ESTIMATORS[0], pytest.param(ESTIMATORS[1], marks=pytest.mark.slow)], ids=["dreg-piwae", "stl-ciwae"]
)
def test_b_the_estimators_in_two_processes_take_one_process_steps(estimator_runs, names):
    """DReG and PIWAE (their gradients routed through views of the draws), STL and CIWAE, with 4
    particles per image, each particle's noise the same for every image and process
    (``--shared-noise``): 2 processes, each scoring its half of the global batch, average to the
    1-process gradient, so they take its steps; the particles differ, so the estimators' weights
    are not uniform (a bug in how a bound is scaled or split would show)."""
    finals = {}
    for name in names:
        (one,) = [json.loads(p.read_text()) for p in sorted((estimator_runs / "est1_log" / name).glob("rank*.json"))]
        two, other = [
            json.loads(p.read_text()) for p in sorted((estimator_runs / "est2_log" / name).glob("rank*.json"))
        ]
        assert two["world"] == 2 and one["world"] == 1
        assert [s["params"] for s in two["steps"]] == [s["params"] for s in other["steps"]], name
        assert len(one["steps"]) == len(two["steps"]) == 6  # 300 images in global batches of 50
        assert [s["loss"] for s in two["steps"]] == pytest.approx([s["loss"] for s in one["steps"]], rel=1e-5), name
        for key, value in one["params"].items():
            assert torch.allclose(torch.tensor(two["params"][key]), torch.tensor(value), atol=1e-5), (name, key)
        finals[name] = one["steps"][-1]["loss"]
    assert len(set(finals.values())) == len(names), finals  # different estimators, different runs


def test_c_only_rank_0_writes_files_and_prints(runs):
    rank0, rank1 = rank_logs(runs["base"], "det2")
    assert rank1["written"] == []
    assert {Path(p).name for p in rank0["written"]} == EXPECTED_FILES
    # no stray temporary files; the folder's lock, taken by rank 0 only, released (empty)
    assert {p.name for p in (runs["base"] / "two").iterdir()} == EXPECTED_FILES | {LOCK_NAME}
    assert (runs["base"] / "two" / LOCK_NAME).read_text() == ""
    stdout = runs["two"].stdout
    assert stdout.count("epoch   1/2") == 1 and stdout.count("done: 2 epochs") == 1
    assert "2 processes x cpu" in stdout
    summary = json.loads((runs["base"] / "two" / "summary.json").read_text())
    assert summary["processes"] == 2


def test_d_an_exception_on_rank_1_ends_both_processes_with_its_message(mnist_dataset, tmp_path):
    started = time.monotonic()
    result = job(
        [
            str(HELPER),
            "--data-dir",
            data_dir_of(mnist_dataset),
            "--devices",
            "2",
            "--fail-rank",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--log-dir",
            str(tmp_path / "log"),
        ],
        timeout=TIMEOUT_S,
    )
    assert result.returncode != 0
    assert "injected failure on rank 1 at step 3" in result.stderr
    assert not (tmp_path / "log").exists()  # neither process finished
    assert time.monotonic() - started < TIMEOUT_S


def test_a_step_makes_no_collective_but_the_gradient_all_reduce(mnist_dataset, tmp_path):
    """Over an epoch of 6 steps in 2 processes: DDP's gradient all-reduce (the same number of
    buckets at every step), the losses' all-reduce once per log interval (every 2 steps here),
    and rank 0's buffers broadcast once at the epoch's end; nothing else (DDP's own broadcast of
    the buffers before every forward included)."""
    args = ["--data-dir", data_dir_of(mnist_dataset), "--out", str(tmp_path / "run")]
    ok(job([str(COLLECTIVES_HELPER), *args, "--log-dir", str(tmp_path / "log")]))
    logs = [json.loads(p.read_text()) for p in sorted((tmp_path / "log").glob("rank*.json"))]
    assert len(logs) == 2
    for log in logs:
        steps, buckets = log["steps"], log["buckets_per_step"]
        assert steps == 6 and len(buckets) == steps and buckets[0] >= 1 and len(set(buckets)) == 1, log
        intervals = -(-steps // log["log_every"])  # the losses, once per log interval
        assert log["buffers"] >= 1  # the default VAE's prior holds two
        expected = {"gloo:all_reduce": steps * buckets[0] + intervals, "gloo:broadcast": log["buffers"]}
        assert log["collectives"] == expected, log


def test_e_g_torchrun_two_nodes_trains_and_resumes_exactly(runs, mnist_dataset):
    """``torchrun --nnodes 2 --nproc-per-node 1`` on localhost (two launchers: the multi-node path)
    trains one epoch, then resumes to two; the result equals the uninterrupted 2-process run."""
    out = runs["base"] / "torchrun"
    data = ["--data-dir", data_dir_of(mnist_dataset)]
    for extra in (["--epochs", "1", "--out", str(out)], ["--resume", str(out), "--epochs", "2"]):
        port = free_port()
        fit = (
            ["-m", "pyro_vae.fit", *RUN, *data, "--devices", "1", "--num-nodes", "2", *extra]
            if extra[0] == "--epochs"
            else ["-m", "pyro_vae.fit", *extra, "--devices", "1", "--num-nodes", "2"]
        )
        launchers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--nnodes",
                    "2",
                    "--nproc-per-node",
                    "1",
                    "--node-rank",
                    str(node),
                    "--master-addr",
                    "127.0.0.1",
                    "--master-port",
                    str(port),
                    *fit,
                ],
                cwd=ROOT,
                env=environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for node in (0, 1)
        ]
        try:
            outputs = [p.communicate(timeout=TIMEOUT_S) for p in launchers]
        except subprocess.TimeoutExpired:
            for p in launchers:
                p.kill()
            pytest.fail("torchrun did not end within the timeout")
        for p, (stdout, stderr) in zip(launchers, outputs):
            assert p.returncode == 0, f"{stdout[-3000:]}\n{stderr[-3000:]}"
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and len(checkpoint["rng"]) == 2
    reference = networks(runs["base"] / "two")
    for key, value in reference.items():
        assert torch.equal(checkpoint["networks"][key], value), key
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]


def test_resume_refuses_another_number_of_processes(runs, capsys):
    from pyro_vae.cli.fit import main

    assert main(["--resume", str(runs["base"] / "two"), "--epochs", "3", "--devices", "1"]) == 2
    assert "written by a run of 2 process(es); resume it with the same number" in capsys.readouterr().err


def test_evaluate_with_two_processes_gives_one_process_numbers(runs):
    run = runs["base"] / "two"
    args = [
        "-m",
        "pyro_vae.evaluate",
        str(run),
        "--k",
        "8",
        "--limit",
        "60",
        "--batch-size",
        "20",
        "--curve-images",
        "20",
        "--accelerator",
        "cpu",
        "--no-progress",
    ]
    ok(job([*args, "--devices", "2"]))
    two = json.loads((run / "eval.json").read_text())["test"]
    from pyro_vae.cli.evaluate import main

    assert main(args[2:]) == 0  # 1 process: in this one
    one = json.loads((run / "eval.json").read_text())["test"]
    assert two["processes"] == 2 and one["processes"] == 1
    for key in ("log_px_mean", "elbo_mean", "log_px_against_k"):
        assert two[key] == one[key], key


def test_a_global_batch_that_does_not_divide_is_refused_before_any_process_starts(capsys):
    from pyro_vae.cli.fit import main

    assert main(["--accelerator", "cpu", "--devices", "3", "--batch-size", "128", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size 128 (the global batch) is split evenly across 3 processes" in err
    assert "e.g. --batch-size 126" in err and "Traceback" not in err
