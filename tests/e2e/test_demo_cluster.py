"""`nurserywatch demo --cluster` as a newcomer runs it: 3 nats-server nodes, two gateway processes (one
active, one standing by), the edge, the simulator and the dashboard in one command; the console says
what runs where; readings reach the dashboard and the active gateway; Ctrl-C (SIGINT) stops every
process it started. Without nats-server it says how to install it, in one line."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from nurserywatch.ports import free_port, wait_for_port
from tests.support.dashboard_login import login_sync
from tests.support.processes import spawn
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def readings_stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return int(con.execute("SELECT count(*) FROM readings").fetchone()[0])
    except sqlite3.OperationalError:  # the schema not made yet
        return 0


def breathing_shown(api: httpx.Client) -> bool:
    children = [c for room in api.get("/api/rooms").json() for c in room["children"]]
    return any(c["breathing"] is not None and c["breathing"]["age_s"] < 10 for c in children)


def test_demo_cluster_runs_three_nodes_and_two_gateways_and_ctrl_c_stops_them_all(tmp_path: Path) -> None:
    port = free_port()
    proc, log = spawn("demo", ["demo", "--cluster", "--port", str(port), "--data-dir", str(tmp_path)], tmp_path)
    base = f"http://127.0.0.1:{port}"
    pids: set[int] = set()
    try:
        wait_for_port(port, timeout_s=90)  # printed once the first gateway is active
        printed = log.read_text()
        nodes = re.findall(r"NATS (n\d) \(pid (\d+)\): nats://127\.0\.0\.1:\d+  MQTT mqtt://127\.0\.0\.1:\d+", printed)
        assert [n for n, _ in nodes] == ["n1", "n2", "n3"], printed
        gateways = dict(re.findall(r"gateway ([ab]): started \(pid (\d+)", printed))
        assert set(gateways) == {"a", "b"}, printed
        pids = {int(p) for _, p in nodes} | {int(p) for p in gateways.values()}
        assert all(alive(p) for p in pids)
        # What runs where: a holds the lease, b follows its journal.
        assert f"gateway a (pid {gateways['a']}): ACTIVE" in printed
        assert f"gateway b (pid {gateways['b']}): standby" in printed
        assert f"{base}/" in printed
        account = re.search(r"sign in \(staff\): (\S+) / (\S+)", printed)
        assert account, "the demo must print a staff account"
        api = httpx.Client(base_url=base)
        assert login_sync(api, *account.groups())["role"] == "staff"
        # Readings from the simulated mats reach the dashboard (over MQTT, from another node than the
        # gateway's) and the active gateway's database (from the site's JetStream input).
        wait_for(lambda: breathing_shown(api), "a breathing reading on the dashboard", 60, every_s=0.2)
        db = tmp_path / "cluster" / "gateway-a" / "gateway.sqlite3"
        wait_for(lambda: readings_stored(db) > 0, "a reading stored by the active gateway", 60, every_s=0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the demo's own group (its children have theirs)
        try:
            rc = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = None
        left = sorted(p for p in pids if alive(p))
        for p in left:  # never leak processes from a failed run
            os.kill(p, signal.SIGKILL)
        print(log.read_text()[-3000:])
    assert rc == 0, "the demo did not stop cleanly within 40 s of Ctrl-C"
    assert left == [], f"processes left after Ctrl-C: {left}"
    with pytest.raises(ProcessLookupError):  # nothing of the demo's process group is left
        os.killpg(proc.pid, 0)
    assert "Traceback" not in log.read_text()


def test_demo_cluster_without_nats_server_says_how_to_install_it(tmp_path: Path) -> None:
    # An interpreter with no nats-server beside it nor on PATH (the project from the source tree).
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.symlink_to(Path(sys.executable).resolve())
    site = [p for p in sys.path if p.endswith("site-packages")]
    env = {**os.environ, "PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join([str(ROOT), *site])}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [str(python), "-m", "nurserywatch", "demo", "--cluster", "--port", str(free_port()),
         "--data-dir", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: --cluster needs nats-server"), result.stderr
    assert "pip install 'nurserywatch[demo]'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "cluster").exists()
