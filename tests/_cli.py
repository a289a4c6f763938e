"""The ``heatup`` command as a real subprocess, for the tests of its exits, messages and interruptions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def heatup(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``heatup ARGS`` to its end; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", "heatup_lib.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=REPO)


def python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -c CODE`` (with this checkout importable) to its end."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=ENV, cwd=REPO)


def start(*command: str) -> subprocess.Popen:
    """Start a command in its own process group (as a shell starts a job), output captured as text.

    SIGINT is reset to its default in the child: a test suite started in the background by a
    non-interactive shell inherits SIGINT ignored, and the Ctrl-C tests would then never interrupt.
    """
    return subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=REPO, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def start_heatup(*args: str) -> subprocess.Popen:
    """Start ``heatup ARGS`` in its own process group."""
    return start(sys.executable, "-m", "heatup_lib.cli", *args)


def wait_for(condition, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    """Poll ``condition()`` every 50 ms; fail after ``timeout`` s or when ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """The PIDs of the direct children of ``pid`` (Linux ``/proc``)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
