"""The output folder's lock: one process per run folder, a dead holder's lock taken over with a
message, and the folder checks."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from pyro_vae.errors import OutputError
from pyro_vae.run_lock import LOCK_NAME, RunFolderBusy, RunLock, ensure_writable_folder

HOLD_SCRIPT = textwrap.dedent("""
    import sys, time
    from pyro_vae.run_lock import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    lock.release()
""")


def hold_in_subprocess(folder, seconds):
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_lock_on_one_folder_is_refused_and_names_the_holder(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunFolderBusy) as info:
        RunLock(tmp_path).acquire()
    message = str(info.value)
    assert f"{tmp_path} is in use by process {os.getpid()} on {socket.gethostname()}" in message
    assert "choose another --out" in message
    first.release()
    lines = []
    with RunLock(tmp_path, log=lines.append) as again:
        assert again.held
    assert lines == []  # released cleanly: nobody to take over from
    assert (tmp_path / LOCK_NAME).read_text() == ""


def test_another_process_holding_the_folder_is_named(tmp_path):
    child = hold_in_subprocess(tmp_path, 30)
    try:
        with pytest.raises(RunFolderBusy, match=f"in use by process {child.pid} on {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    finally:
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()


def test_the_lock_of_a_killed_process_is_taken_over_with_a_message(tmp_path):
    child = hold_in_subprocess(tmp_path, 60)
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert holder["pid"] == child.pid and holder["host"] == socket.gethostname()
    os.kill(child.pid, signal.SIGKILL)  # kill -9: no chance to release
    child.wait(timeout=30)
    child.stdout.close()
    lines = []
    lock = RunLock(tmp_path, log=lines.append).acquire()
    assert lines == [
        f"{tmp_path}: taking over the lock of process {child.pid} on {socket.gethostname()} "
        f"(since {holder['started']}: {holder['command']}), which ended without releasing it "
        f"(killed or crashed)"
    ]
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_exclusive_file_fallback_without_flock(tmp_path, monkeypatch):
    """Where flock is not supported the lock file itself, created with O_EXCL, is the lock; a file
    naming a process that no longer runs on this host is taken over."""
    import fcntl

    def no_flock(fd, operation):
        raise OSError(38, "Function not implemented")  # ENOSYS

    monkeypatch.setattr(fcntl, "flock", no_flock)
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunFolderBusy, match=f"in use by process {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    lines = []
    RunLock(tmp_path, log=lines.append).acquire().release()
    assert lines and f"taking over the lock of process {dead.pid}" in lines[0]


def test_ensure_writable_folder(tmp_path):
    assert ensure_writable_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="is an existing file, not a folder"):
        ensure_writable_folder(a_file)
    with pytest.raises(OutputError, match=f"lies under {a_file}, which is a file"):
        ensure_writable_folder(a_file / "run", "--out")
