"""A run folder is never lost or mixed up (issue 12, points 1-3 and 5): one `fit` per folder at a
time, no silent replacement, `kill -9` at five moments then `--resume` gives the uninterrupted
run's checkpoints bit for bit and every file, and divergence is one clear message.

Every run here is tiny (300 images, a 16-unit network, 3 epochs of 6 steps): the interrupted runs
are subprocesses (killed with SIGKILL at named points of the engine, pyro_vae.engine.faults),
started together; the reference and the resumptions run in this process."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import cli_args, data_dir_of

import pyro_vae
from pyro_vae.cli.fit import main
from pyro_vae.config import FitConfig
from pyro_vae.engine import Trainer, load_checkpoint
from pyro_vae.engine.faults import KILL_ENV, KILL_SIGNAL_ENV
from pyro_vae.errors import TrainingDiverged
from pyro_vae.run_lock import LOCK_NAME

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(train_size=300, eval_size=100, latent_dim=2, hidden=(16,), batch_size=50, epochs=3)
STEPS_PER_EPOCH = 6
# The five moments of issue 12: mid-epoch (epoch 2, step 9 of 18); during the final epoch's
# checkpoint (last.pt written to its temporary file, not yet renamed); during the best.pt copy;
# before the pictures; before the summary. And between best.pt and metrics.jsonl, and between
# metrics.jsonl and curves.png (issue 26 point 7: finishing the run redraws curves.png).
KILLS = ("step@9", "checkpoint@3", "best@3", "metrics@3", "curves@3", "pictures@3", "summary@3")
# wall-clock measurements and the run's own folder: the only fields that may differ
TIMING = {"seconds", "images_per_s", "out"}


def tiny_args(mnist_dataset, out, **overrides):
    return cli_args(mnist_dataset, out, **{**TINY, **overrides})


def environment(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return env


def start_fit(args, **extra_env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pyro_vae.fit", *args],
        cwd=ROOT,
        env=environment(**extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def without_timing(value):
    """A checkpoint payload or metrics record with the wall-clock fields (and the folder) dropped."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, (list, tuple)):
        return type(value)(without_timing(v) for v in value)
    return value


def assert_identical(a, b, where="payload"):
    """Equal structure and values; tensors bit for bit (dtype, shape and every element)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b) or (
            a.is_floating_point() and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
        ), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, set(a) ^ set(b))
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), (where, a, b)


def files_of(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


def records(out: Path) -> list[dict]:
    return [without_timing(json.loads(line)) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(mnist_dataset, tmp_path_factory):
    """The uninterrupted run (in this process)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(tiny_args(mnist_dataset, out)) == 0
    return out


def test_sigterm_ends_the_run_as_ctrl_c_does_and_resume_finishes_it(mnist_dataset, reference, tmp_path, capsys):
    """A scheduler's stop (SIGTERM, mid-epoch at step 9) ends fit with Ctrl-C's message and
    status, no traceback; --resume then gives the uninterrupted run's checkpoints bit for bit."""
    out = tmp_path / "terminated"
    child = start_fit(tiny_args(mnist_dataset, out), **{KILL_ENV: "step@9", KILL_SIGNAL_ENV: "TERM"})
    _, err = child.communicate(timeout=600)
    assert child.returncode == 130, (child.returncode, err[-2000:])
    assert "interrupted: the last completed epoch's checkpoint (last.pt) is intact" in err
    assert "Traceback" not in err
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    capsys.readouterr()
    assert main(["--resume", str(out)]) == 0
    for name in ("last.pt", "best.pt"):
        assert_identical(
            without_timing(load_checkpoint(out / name)), without_timing(load_checkpoint(reference / name)), name
        )


def test_kill_9_at_five_moments_then_resume_equals_the_uninterrupted_run(mnist_dataset, reference, tmp_path, capsys):
    best = max(records(reference), key=lambda r: r["valid_elbo"])["epoch"]
    assert best == 3  # so best@3 interrupts a real copy
    assert load_checkpoint(reference / "best.pt")["epoch"] == 3
    outs = {kill: tmp_path / kill.replace("@", "-") for kill in KILLS}
    children = {kill: start_fit(tiny_args(mnist_dataset, out), **{KILL_ENV: kill}) for kill, out in outs.items()}
    for kill, child in children.items():
        _, err = child.communicate(timeout=600)
        assert child.returncode == -9, (kill, child.returncode, err[-2000:])  # killed at that point
    # what each kill left: the state an interruption there leaves
    assert load_checkpoint(outs["step@9"] / "last.pt")["epoch"] == 1
    assert any(p.name.startswith(".last.pt.") for p in outs["checkpoint@3"].iterdir())  # a partial write
    assert load_checkpoint(outs["checkpoint@3"] / "last.pt")["epoch"] == 2
    assert load_checkpoint(outs["best@3"] / "best.pt")["epoch"] == 2  # one epoch behind last.pt
    for kill in ("best@3", "metrics@3", "curves@3", "pictures@3", "summary@3"):
        assert load_checkpoint(outs[kill] / "last.pt")["epoch"] == 3
        assert not (outs[kill] / "summary.json").exists()
        # metrics.jsonl's best validation epoch is the epoch best.pt holds, except between the two
        # writes (metrics@3: best.pt is epoch 3's, metrics.jsonl has 2 epochs): --resume mends that
        best_in_metrics = max(records(outs[kill]), key=lambda r: r["valid_elbo"])["epoch"]
        assert load_checkpoint(outs[kill] / "best.pt")["epoch"] == (3 if kill == "metrics@3" else best_in_metrics)
        assert best_in_metrics == (2 if kill in ("best@3", "metrics@3") else 3)
    assert not (outs["pictures@3"] / "samples.png").exists() and (outs["summary@3"] / "samples.png").exists()
    # curves@3: metrics.jsonl holds the 3 epochs, curves.png still the picture of 2
    assert len(records(outs["curves@3"])) == 3
    assert (outs["curves@3"] / "curves.png").read_bytes() != (reference / "curves.png").read_bytes()
    capsys.readouterr()

    expected_files = files_of(reference)
    want = {name: without_timing(load_checkpoint(reference / name)) for name in ("last.pt", "best.pt")}
    for kill, out in outs.items():
        assert main(["--resume", str(out)]) == 0, kill
        said = capsys.readouterr().out
        assert "taking over the lock of process" in said, (kill, said)  # the killed holder's
        if kill.split("@")[0] in ("best", "metrics", "curves", "pictures", "summary"):  # its epochs were done
            assert "its 3 epochs are done; finishing what an interruption left" in said, (kill, said)
        if kill == "checkpoint@3":
            assert "removed 1 temporary file(s) left by an interrupted write (.last.pt." in said
        assert files_of(out) == expected_files, (kill, files_of(out) ^ expected_files)  # no .tmp left
        for name in ("last.pt", "best.pt"):
            assert_identical(without_timing(load_checkpoint(out / name)), want[name], f"{kill}: {name}")
        assert records(out) == records(reference), kill
        summary, ref_summary = (json.loads((o / "summary.json").read_text()) for o in (out, reference))
        for key in ("epochs", "best_epoch", "best_valid_elbo", "final", "files", "pictures"):
            assert summary[key] == ref_summary[key], (kill, key)
        for picture in ref_summary["pictures"]:  # drawn from the same model, seed and records
            assert (out / picture).read_bytes() == (reference / picture).read_bytes(), (kill, picture)


def test_a_finished_run_resumed_again_is_complete(reference, capsys):
    assert main(["--resume", str(reference)]) == 2
    assert "already has 3 epochs and is complete; ask for more with --epochs N" in capsys.readouterr().err


def test_fit_on_an_existing_run_is_refused_and_overwrite_replaces_it(mnist_dataset, reference, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    for name in os.listdir(reference):
        if not name.startswith("."):
            (out / name).write_bytes((reference / name).read_bytes())
    (out / "eval.json").write_text("{}")  # an earlier evaluation and its picture
    (out / "khat_test.png").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")  # not the run's: kept
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(tiny_args(mnist_dataset, out, epochs=1)) == 2
    err = capsys.readouterr().err
    assert f"--out {out} already holds a run" in err and f"--resume {out}" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_NAME} == before  # untouched
    assert main(tiny_args(mnist_dataset, out, epochs=1) + ["--overwrite", "--resume", str(out)]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(tiny_args(mnist_dataset, out, epochs=1) + ["--overwrite"]) == 0
    said = capsys.readouterr().out
    assert "--overwrite: removed the earlier run's" in said
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and "eval.json" not in summary["files"] and "khat_test.png" not in summary["files"]
    assert not (out / "eval.json").exists() and (out / "notes.txt").read_text() == "mine"
    assert [r["epoch"] for r in records(out)] == [1]
    assert pyro_vae.load(out).config.epochs == 1


def test_a_second_fit_on_a_busy_folder_is_refused_while_the_first_finishes(mnist_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    first = start_fit(tiny_args(mnist_dataset, out))
    lock = out / LOCK_NAME
    deadline = time.monotonic() + 300
    while not (lock.is_file() and f'"pid": {first.pid}' in lock.read_text()):  # the first holds the folder
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.01)
    status = main(tiny_args(mnist_dataset, out, latent_dim=3))  # another run, the same --out
    err = capsys.readouterr().err
    assert first.poll() is None  # refused while the first was still running
    assert status == 2 and f"{out} is in use by process {first.pid}" in err and "Traceback" not in err
    out_text, err_text = first.communicate(timeout=600)
    assert first.returncode == 0, err_text[-2000:]
    assert "done: 3 epochs" in out_text
    assert json.loads((out / "config.json").read_text())["latent_dim"] == 2  # the first run's, intact
    assert pyro_vae.load(out).config.latent_dim == 2 and load_checkpoint(out / "last.pt")["epoch"] == 3
    assert lock.read_text() == ""  # released at the end


def test_huge_learning_rate_ends_in_the_divergence_message(mnist_dataset, tmp_path, capsys):
    """--lr 1e6 with the default network sizes: the second step's outputs overflow and the
    Bernoulli likelihood's argument check refuses NaN logits, inside Pyro, before any loss is read."""
    out = tmp_path / "run"
    assert main(tiny_args(mnist_dataset, out, lr=1e6, hidden=(512, 512), latent_dim=32, epochs=1)) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert captured.err.startswith("error: training diverged at epoch 1, after step "), captured.err
    assert "became NaN or infinite" in captured.err and "no checkpoint was written yet" in captured.err
    assert "lower --lr (now 1e+06)" in captured.err
    assert not (out / "last.pt").exists() and (out / "config.json").exists()
    # a run stopped in its first epoch holds nothing to resume: a new run may simply start there
    assert main(tiny_args(mnist_dataset, out, epochs=1)) == 0
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-3


def test_non_finite_parameters_stop_training_and_keep_the_last_good_checkpoint(mnist_dataset, tmp_path):
    """A NaN parameter after the 2nd step of epoch 2: the next step's Normal refuses its arguments
    (a ValueError inside Pyro); the trainer reports the divergence instead, and last.pt stays epoch 1's."""
    config = FitConfig(**TINY, data_dir=data_dir_of(mnist_dataset), out=str(tmp_path))
    trainer = Trainer(config, mnist_dataset, tmp_path, "cpu", log=lambda _: None)

    def poison(t, _loss):
        if t.step == STEPS_PER_EPOCH + 2:
            with torch.no_grad():
                next(t.vae.parameters()).fill_(math.nan)

    trainer.step_hooks.append(poison)
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    message = str(info.value)
    assert f"training diverged at epoch 2, after step {STEPS_PER_EPOCH + 2} (batch 2 of {STEPS_PER_EPOCH})" in message
    assert "last.pt (epoch 1), is kept" in message
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in load_checkpoint(tmp_path / "last.pt")["networks"].values())
