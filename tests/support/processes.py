"""Starting and stopping `nurserywatch` subcommands as real processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def spawn(
    name: str, args: list[str], log_dir: Path, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    """``nurserywatch <args>`` in its own process group, output in ``log_dir/<name>.log``; ``env``:
    variables added to the test's environment."""
    log = log_dir / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nurserywatch", *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,  # its own process group, so teardown reaches every child
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    return proc, log


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def print_logs(logs: dict[str, Path], lines: int = 15) -> None:
    for name, log in logs.items():
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"----- {name} log (tail) -----", *tail, sep="\n")
