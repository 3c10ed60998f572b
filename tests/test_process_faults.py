"""A process of a 2-process CPU run (gloo) that ends before the others (issue 26 point 6): ``kill -9``
of rank 1 mid-run ends the job at once with one message of ours (which process, the intact
checkpoint, the resume command) and no traceback, and ``--resume`` then completes; a process ending
after rank 0 has finished the run leaves it complete (exit 0); ``kill -9`` of rank 0 leaves no
process behind; Lightning's banner is one line of ours. The same for ``evaluate --devices 2``: one
message (which process, the run unchanged, the command to evaluate again) while rank 0 is still
scoring its own images, and not a file of the run changed. Each job is a subprocess with a timeout,
killed at a named point of the engine (:mod:`pyro_vae.engine.faults`), on 300 MNIST images.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_distributed import RUN, TIMEOUT_S, environment, job
from test_train import data_dir_of

from pyro_vae.engine.faults import KILL_ENV, KILL_RANK_ENV
from pyro_vae.engine.peers import (
    PeerWatch,
    describe_ended,
    ended_ranks,
    lost_evaluation_message,
    lost_peer,
    lost_process_message,
)

ROOT = Path(__file__).resolve().parent.parent
GLOO_WORDS = ("Traceback", "gloo", "pair.cc", "[rank0]", "[rank1]", "ProcessGroup")
BANNER = ("Initializing distributed", "All distributed processes registered", "distributed_backend=")


def killed_job(args: list[str], kill_at: str, rank: int) -> subprocess.CompletedProcess:
    """``job(args)`` with the process of ``rank`` killed (SIGKILL) at the engine's point ``kill_at``."""
    env = {KILL_ENV: kill_at, KILL_RANK_ENV: str(rank)}
    os.environ.update(env)  # job() passes this process's environment on
    try:
        return job(args)
    finally:
        for key in env:
            os.environ.pop(key)


def pids(stdout: str) -> dict[int, int]:
    """{rank: pid} from our line '2 processes connected (gloo): rank 0 pid 11, rank 1 pid 12'."""
    return {int(r): int(p) for r, p in re.findall(r"rank (\d+) pid (\d+)", stdout)}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def killed_rank_1(mnist_dataset, tmp_path_factory):
    """Rank 1 killed at step 8 (epoch 2 of 2: 6 steps an epoch), then ``--resume`` with rank 1
    killed again once rank 0 has finished the run (summary.json written)."""
    out = tmp_path_factory.mktemp("faults") / "run"
    fit = ["-m", "pyro_vae.fit", *RUN, "--data-dir", data_dir_of(mnist_dataset), "--devices", "2", "--epochs", "2"]
    started = time.monotonic()
    killed = killed_job([*fit, "--out", str(out)], "step@8", rank=1)
    seconds = time.monotonic() - started
    complete_after_kill = (out / "summary.json").exists()
    resumed = killed_job(["-m", "pyro_vae.fit", "--resume", str(out)], "complete@2", rank=1)
    return {"out": out, "killed": killed, "seconds": seconds, "complete": complete_after_kill, "resumed": resumed}


def test_kill_9_of_rank_1_mid_run_ends_the_job_with_one_message(killed_rank_1):
    killed, out = killed_rank_1["killed"], killed_rank_1["out"]
    assert killed.returncode == 2, (killed.returncode, killed.stderr[-3000:])
    assert killed_rank_1["seconds"] < TIMEOUT_S
    rank_1 = pids(killed.stdout)[1]
    lines = [line for line in killed.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: rank 1 (pid {rank_1}) of this 2-process job ended during the run; the last completed "
        f"epoch's checkpoint ({out / 'last.pt'}, epoch 1) is intact; continue with: "
        f"python -m pyro_vae.fit --resume {out}"
    ], killed.stderr[-3000:]
    assert "epoch   1/2" in killed.stdout and "epoch   2/2" not in killed.stdout
    assert not killed_rank_1["complete"]  # no summary.json


def test_resume_after_the_kill_completes_the_run(killed_rank_1):
    resumed, out = killed_rank_1["resumed"], killed_rank_1["out"]
    assert resumed.returncode == 0, (resumed.returncode, resumed.stdout[-2000:], resumed.stderr[-3000:])
    assert "epoch   2/2" in resumed.stdout and "done: 2 epochs" in resumed.stdout
    import json

    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_process_ending_after_rank_0_finished_leaves_the_run_complete(killed_rank_1):
    """The resumed job's rank 1 was killed once summary.json was written, before the barrier that
    ends training: the job still exits 0, says the run is complete, and shows no traceback."""
    resumed = killed_rank_1["resumed"]
    rank_1 = pids(resumed.stdout)[1]
    note = f"note: rank 1 (pid {rank_1}) of this job ended after the run was complete; nothing is lost"
    assert note in resumed.stdout
    assert not alive(rank_1)  # it was killed: the point was reached
    for words in GLOO_WORDS:
        assert words not in resumed.stderr, resumed.stderr[-3000:]


def test_lightning_banner_is_one_line_of_ours(killed_rank_1):
    for result in (killed_rank_1["killed"], killed_rank_1["resumed"]):
        for words in BANNER:
            assert words not in result.stderr + result.stdout, result.stderr[-3000:]
        assert re.search(r"^2 processes connected \(gloo\): rank 0 pid \d+, rank 1 pid \d+$", result.stdout, re.M)


def killed_rank_0(args: list[str], kill_at: str) -> tuple[int, str, str]:
    """``python ARGS`` (a 2-process job) with rank 0, the launching process, killed (SIGKILL) at
    the engine's point ``kill_at``: its exit status, stdout and stderr, once rank 1 (the process
    Fabric started) has ended too, which must be within 10 s of rank 0."""
    env = {**environment(), KILL_ENV: kill_at, KILL_RANK_ENV: "0"}
    launcher = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        launcher.wait(timeout=TIMEOUT_S)
        ended = time.monotonic()
        stdout, stderr = launcher.communicate(timeout=30)  # its pipes close when rank 1 has ended too
    except subprocess.TimeoutExpired:
        launcher.kill()
        pytest.fail("the job, or rank 1 after rank 0 was killed, did not end")
    assert time.monotonic() - ended < 10
    rank_1, deadline = pids(stdout)[1], time.monotonic() + 5
    while alive(rank_1) and time.monotonic() < deadline:  # its pipes close a moment before it has ended
        time.sleep(0.05)
    assert not alive(rank_1), stderr[-3000:]
    return launcher.returncode, stdout, stderr


def test_kill_9_of_rank_0_leaves_no_process_behind(mnist_dataset, tmp_path):
    """Rank 0 killed at step 8: the process Fabric started (rank 1) ends within seconds (its
    collective fails, or its watchdog sees rank 0 gone), without a traceback."""
    out = tmp_path / "run"
    args = [*RUN, "--data-dir", data_dir_of(mnist_dataset), "--devices", "2", "--epochs", "2", "--out", str(out)]
    status, _, stderr = killed_rank_0(["-m", "pyro_vae.fit", *args], "step@8")
    assert status == -9
    assert "Traceback" not in stderr and "pair.cc" not in stderr, stderr[-3000:]
    assert (out / "last.pt").is_file()  # epoch 1's checkpoint: --resume continues from it


# -- evaluate --devices 2 --------------------------------------------------------------------------

# rank 0 scores 100 images x K = 5000 alone after rank 1 is killed: seconds, longer than Lightning's
# launcher waits (at most 5 s) before it kills rank 0 without a word for a process that failed
EVALUATE = ["--k", "5000", "--limit", "200", "--batch-size", "20", "--curve-images", "0", "--no-progress"]
EVALUATE += ["--accelerator", "cpu", "--devices", "2"]


@pytest.fixture(scope="module")
def evaluated_run(mnist_dataset, tmp_path_factory):
    """A run of one epoch, trained and evaluated once in this process: its eval.json and pictures
    are what a killed evaluation must leave as they were."""
    from pyro_vae.cli.evaluate import main as evaluate
    from pyro_vae.cli.fit import main as fit

    out = tmp_path_factory.mktemp("evaluate_faults") / "run"
    assert fit([*RUN, "--data-dir", data_dir_of(mnist_dataset), "--epochs", "1", "--out", str(out)]) == 0
    assert evaluate([str(out), "--k", "2", "--limit", "20", "--accelerator", "cpu", "--no-progress"]) == 0
    assert (out / "eval.json").is_file()
    return out


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_kill_9_of_rank_1_during_evaluate_ends_the_job_with_one_message(evaluated_run):
    """Rank 1 killed before it scores a batch: rank 0, scoring its own share, ends the job at once
    with one message and exit status 2; no file of the run is changed or added."""
    run, before = evaluated_run, files_of(evaluated_run)
    killed = killed_job(["-m", "pyro_vae.evaluate", str(run), *EVALUATE], "evaluate@0", rank=1)
    assert "Traceback" not in killed.stderr, killed.stderr[-3000:]
    assert killed.returncode == 2, (killed.returncode, killed.stderr[-3000:])
    rank_1 = pids(killed.stdout)[1]
    lines = [line for line in killed.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: rank 1 (pid {rank_1}) of this 2-process job ended during the evaluation, before its results "
        f"were written: nothing in {run} was changed (its checkpoints and eval.json are untouched); evaluate "
        f"again with: python -m pyro_vae.evaluate {run} {' '.join(EVALUATE)}"
    ], killed.stderr[-3000:]
    assert files_of(run) == before


def test_kill_9_of_rank_0_during_evaluate_leaves_no_process_behind(evaluated_run):
    run, before = evaluated_run, files_of(evaluated_run)
    status, _, stderr = killed_rank_0(["-m", "pyro_vae.evaluate", str(run), *EVALUATE], "evaluate@0")
    assert status == -9
    assert "Traceback" not in stderr and "pair.cc" not in stderr, stderr[-3000:]
    assert files_of(run) == before


# -- the pieces, in this process -------------------------------------------------------------------


def test_lost_peer_knows_gloo_and_nccl_errors_of_a_process_that_ended():
    import torch.distributed as dist

    assert lost_peer(RuntimeError("[../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:3509"))
    assert lost_peer(RuntimeError("[pair.cc:545] Read error [127.0.0.1]:5: Connection reset by peer."))
    assert lost_peer(dist.DistBackendError("NCCL communicator was aborted"))
    assert not lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not lost_peer(ValueError("Connection closed by peer"))


def test_ended_ranks_finds_a_process_that_ended_and_not_one_that_runs():
    import socket

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 30
        while alive(ended.pid) and time.monotonic() < deadline:  # a zombie until reaped: ended all the same
            time.sleep(0.05)
        host = socket.gethostname()
        processes = [(host, os.getpid()), (host, ended.pid), (host, running.pid), ("elsewhere", 1)]
        assert ended_ranks(processes, rank=0, wait_s=0.1) == [1]
        assert describe_ended(processes, [1]) == f"rank 1 (pid {ended.pid})"
        assert describe_ended(processes, []) == "another process"
    finally:
        running.kill()
        running.wait()
        ended.wait()


def test_the_message_names_the_python_call_for_pyro_vae_fit(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"")
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 3}\n')
    processes = [("h", 10), ("h", 11)]
    message = lost_process_message(processes, [1], tmp_path, keywords=True)
    assert f"epoch 3) is intact; continue with: pyro_vae.fit(resume={str(tmp_path)!r})" in message
    assert "--" not in message
    (tmp_path / "last.pt").unlink()
    message = lost_process_message(processes, [1], tmp_path)
    assert "before its first epoch was complete: nothing to resume; run the same command again" in message


def test_the_evaluation_message_says_what_was_kept_and_how_to_evaluate_again(tmp_path):
    processes = [("h", 10), ("h", 11), ("h", 12)]
    message = lost_evaluation_message(processes, [1, 2], tmp_path, "pyro-vae evaluate run --devices 3")
    assert message == (
        f"rank 1 (pid 11) and rank 2 (pid 12) of this 3-process job ended during the evaluation, before its "
        f"results were written: nothing in {tmp_path} was changed (its checkpoints are untouched and no "
        f"eval.json was written); evaluate again with: pyro-vae evaluate run --devices 3"
    )
    (tmp_path / "eval.json").write_text("{}")
    message = lost_evaluation_message(processes, [], tmp_path)
    assert message.startswith("another process of this 3-process job ended during the evaluation")
    assert message.endswith("(its checkpoints and eval.json are untouched); run the same evaluation again")


def sleeper(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def test_the_peer_watch_reports_a_process_that_ends_until_it_is_stopped(monkeypatch):
    """A watch (its report, which ends the process, replaced by a queue) says which rank ended
    while this thread waits; a watch stopped before its process ends says nothing."""
    import queue
    import socket

    reported = queue.Queue()
    monkeypatch.setattr(PeerWatch, "_report", lambda _watch, ended: reported.put(ended))
    host = socket.gethostname()
    me = (host, os.getpid())
    early, late = sleeper(0.2), sleeper(1.0)
    try:
        PeerWatch([me, (host, early.pid)], str).stop()  # would report [1]
        early.wait(timeout=30)
        watch = PeerWatch([me, ("elsewhere", 1), (host, late.pid)], str)
        assert reported.get(timeout=30) == [2]
        assert late.poll() is not None  # it had ended (a zombie until reaped here)
        watch.stop()
        while not reported.empty():
            assert reported.get() == [2]
    finally:
        for process in (early, late):
            process.kill()
            process.wait()
