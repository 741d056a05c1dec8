"""DESIGN.md §3's dependency rules, checked on the source (ast), for every module of every part.

- edge runs alone on a Pi: only the shared package (nurserywatch) and its own modules;
- gateway never imports edge, dashboard or firmware_sim;
- dashboard imports the gateway's storage *read* interface only, never edge or firmware_sim;
- firmware_sim imports none of edge, gateway, dashboard (it writes bytes from the formats on its own);
- the shared package imports no part, except the CLI/demo wiring (inside functions);
- decoders, signal analysis and rule logic are pure: no I/O library and no wall clock. Only the
  shells listed below may do I/O.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("edge", "gateway", "dashboard", "firmware_sim", "nurserywatch")
IO_LIBS = {
    "serial", "aiomqtt", "paho", "bleak", "bleak_retry_connector", "httpx", "sqlite3", "socket", "asyncio",
    "subprocess", "os", "time", "uvicorn", "fastapi",
}
#: The thin shells around the pure code: the only modules allowed to touch I/O.
SHELLS = {
    "edge/agent/runner.py", "edge/io/ble_shell.py", "edge/io/clock_probe.py",
    "edge/agent/doctor.py", "edge/io/serial_port.py",
    "edge/io/spool.py",
    "firmware_sim/io/pty_device.py", "firmware_sim/io/runner.py",
    "gateway/service/mqtt.py", "gateway/db/store.py", "gateway/records/store.py", "gateway/influx/writer.py",
    "gateway/influx/buffer.py", "gateway/trends/reader.py",
    "gateway/db/assignments_store.py", "gateway/service/metrics_http.py",
    "nurserywatch/clock.py", "nurserywatch/mqtt.py", "nurserywatch/cli/runtime.py", "nurserywatch/cli/demo.py",
    "nurserywatch/cli/embedded_broker.py", "nurserywatch/cli/main.py", "nurserywatch/cli/provision_files.py",
    "gateway/retention/store.py", "gateway/retention/job.py",
    "gateway/child_data/store.py", "gateway/child_data/influx.py", "gateway/child_data/jobs.py",
}
FORBIDDEN = {
    "edge": {"gateway", "dashboard", "firmware_sim"},
    "gateway": {"edge", "dashboard", "firmware_sim"},
    "dashboard": {"edge", "firmware_sim"},
    "firmware_sim": {"edge", "gateway", "dashboard"},
    "nurserywatch": {"edge", "gateway", "dashboard", "firmware_sim"},
}
#: What the dashboard may use of the gateway: its storage read interface.
DASHBOARD_MAY_READ = {"gateway.db.store", "gateway.records.store", "gateway.records.export"}
# Manager pages: trends read through gateway.trends.reader (InfluxDB or SQLite, not the writer) with
# gateway.trends.queries' pure names (metrics, ranges, TrendError); the threshold bands and time-above summary
# come from the same rules file the gateway judges with (gateway.config: pure pydantic models, no I/O
# beyond loading the YAML), so the dashboard cannot draw a different threshold than the one that alerts.
DASHBOARD_MAY_READ |= {"gateway.trends.reader", "gateway.trends.queries", "gateway.config"}
#: CLI wiring may import the parts lazily, inside the command functions.
LAZY_WIRING = {"nurserywatch/cli/main.py", "nurserywatch/cli/demo.py"}


def modules() -> list[Path]:
    return sorted(p for part in PARTS for p in (ROOT / part).rglob("*.py"))


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    # top level only: module-level statements (function bodies and `if TYPE_CHECKING:` are skipped)
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_parts_import_only_what_they_may(path: Path) -> None:
    name = rel(path)
    part = name.split("/")[0]
    found = imports(path, top_level_only=name in LAZY_WIRING)
    bad = {m for m in found if m.split(".")[0] in FORBIDDEN[part]}
    if part == "dashboard":
        bad |= {m for m in found if m.split(".")[0] == "gateway" and m not in DASHBOARD_MAY_READ}
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", [p for p in modules() if rel(p).split("/")[0] in ("edge", "firmware_sim", "gateway")
                                  and rel(p) not in SHELLS], ids=rel)
def test_logic_is_sans_io(path: Path) -> None:
    roots = {m.split(".")[0] for m in imports(path)}
    assert not roots & IO_LIBS, f"{rel(path)} is logic, not a shell: no I/O library and no wall clock"
