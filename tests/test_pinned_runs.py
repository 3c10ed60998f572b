"""Seeded runs of every built-in model kind, pinned: a change that alters what training or
evaluation computes (a different random draw, a reordered sum, a scale applied twice) moves these
numbers and fails here; a change of structure alone (moved code, renamed modules) leaves them.

Each run trains 2 epochs on 300 real MNIST images through ``python -m pyro_vae.fit`` in a fresh
process (one torch thread), then ``python -m pyro_vae.evaluate``'s ``main`` scores 50 test images
with K = 20 in the test's process (one torch thread too: the evaluation is seeded, so it gives the
numbers a process of its own gives).
The tolerance (relative 1e-5) absorbs float differences between CPU kernels and nothing else: a
different seed or order of draws changes these numbers by 1e-3 or more. Update them only for a
change that is meant to alter what a run computes, and say so in its commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_vae.cli.evaluate import main as evaluate_main

pytest_plugins = ["data_fixtures"]

COMMON = [
    "--train-size",
    "300",
    "--eval-size",
    "100",
    "--latent-dim",
    "4",
    "--hidden",
    "32",
    "--batch-size",
    "50",
    "--epochs",
    "2",
    "--seed",
    "3",
]
RUNS = {
    "vae": [],
    "vae-jit": ["--jit"],
    "cvae": ["--model", "cvae"],
    "m2": ["--model", "m2", "--labels", "50"],
    "vae-2proc": ["--devices", "2", "--accelerator", "cpu"],
    "vae-iwae-vamp": ["--elbo", "iwae", "--particles", "3", "--prior", "vamp", "--prior-components", "5"],
}
PINNED = {
    "vae": dict(
        parameter_sum=-282.58148793675565,
        parameter_sum_of_squares=306.36955434020115,
        train_objective=525.4429774305555,
        valid_elbo=-513.5659106445313,
        test_elbo=-514.0339862060547,
        log_px_mean=-504.8362603775685,
        steps=12,
    ),
    "vae-jit": dict(
        parameter_sum=-282.58148698800716,
        parameter_sum_of_squares=306.36955435064465,
        train_objective=525.4429774305555,
        valid_elbo=-513.5659103393555,
        test_elbo=-514.0339874267578,
        log_px_mean=-504.8362605908229,
        steps=12,
    ),
    "cvae": dict(
        parameter_sum=-249.47746691858208,
        parameter_sum_of_squares=303.91328008046617,
        train_objective=529.2677083333333,
        valid_elbo=-521.7979791259766,
        test_elbo=-521.6205926513671,
        log_px_mean=-515.2142428272443,
        steps=12,
    ),
    "m2": dict(
        parameter_sum=-209.0292611477306,
        parameter_sum_of_squares=314.07649371385844,
        train_objective=1065.339225,
        valid_elbo=-522.4466821289062,
        test_elbo=-523.7963693237305,
        log_px_mean=-516.955591716333,
        steps=10,
    ),
    "vae-2proc": dict(
        parameter_sum=-274.10069754653733,
        parameter_sum_of_squares=306.35384457215997,
        train_objective=524.7914366319444,
        valid_elbo=-512.4695755004883,
        test_elbo=-513.0758526611328,
        log_px_mean=-504.44968485257465,
        steps=12,
    ),
    "vae-iwae-vamp": dict(
        parameter_sum=-101.06807498375929,
        parameter_sum_of_squares=314.0473600171262,
        train_objective=521.215,
        valid_elbo=-512.4801089477539,
        test_elbo=-512.714937133789,
        log_px_mean=-502.4104421197041,
        steps=12,
    ),
}
TIMEOUT_S = 300  # per command; the 2-process run takes about 20 s on an idle 2-core CPU


def fingerprint(run: Path) -> dict:
    """Numbers that move with any change of what the run computed."""
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    tensors = [v.double() for v in checkpoint["networks"].values() if v.is_floating_point()]
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    evaluation = json.loads((run / "eval.json").read_text())["test"]
    return dict(
        parameter_sum=sum(float(t.sum()) for t in tensors),
        parameter_sum_of_squares=sum(float(t.pow(2).sum()) for t in tensors),
        train_objective=last["train_objective"],
        valid_elbo=last["valid_elbo"],
        test_elbo=last["test_elbo"],
        log_px_mean=evaluation["log_px_mean"],
        steps=checkpoint["step"],
    )


def _run(args: list[str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_seeded_run_matches_its_pinned_numbers(name, mnist_dataset, tmp_path):
    data_dir = str(Path(mnist_dataset.root).parent.parent)  # root is <data dir>/MNIST/raw
    out = tmp_path / name
    _run(["-m", "pyro_vae.fit", "--data-dir", data_dir, *COMMON, *RUNS[name], "--out", str(out)])
    assert evaluate_main([str(out), "--k", "20", "--limit", "50"]) == 0
    got = fingerprint(out)
    assert got["steps"] == PINNED[name]["steps"]
    for key, value in PINNED[name].items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-9), (key, got[key], value)
