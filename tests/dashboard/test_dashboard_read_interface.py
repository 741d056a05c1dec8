"""The dashboard reads the gateway through one module, gateway/read.py, and that module stays on the
read side: importing it loads no rules, engine, service or observer module (issue 12, item 5)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT

#: Module prefixes the read interface must not load: they run the gateway, they do not read it.
WRITE_SIDE = ("gateway.rules", "gateway.engine", "gateway.service")
#: Nor any module of observers or hooks into the running gateway, wherever it lives.
RUNNING_GATEWAY_WORDS = ("observer", "hook")


def _loaded_by(module: str) -> list[str]:
    """The modules a fresh interpreter holds after importing ``module`` (a subprocess: this test
    run's sys.modules already holds the whole gateway)."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    return list(json.loads(out.stdout))


def test_the_read_module_loads_no_rules_engine_service_or_observer_module() -> None:
    loaded = _loaded_by("gateway.read")
    assert "gateway.read" in loaded
    write_side = [
        m
        for m in loaded
        if m.startswith(WRITE_SIDE) or (m.startswith("gateway.") and any(w in m for w in RUNNING_GATEWAY_WORDS))
    ]
    assert write_side == []


def _gateway_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a gateway module in ``path``, wherever it is written
    (module level, inside functions, under TYPE_CHECKING)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            found.append((node.lineno, node.module))
    return [(line, m) for line, m in found if m == "gateway" or m.startswith("gateway.")]


def test_every_gateway_import_in_the_dashboard_is_the_read_module() -> None:
    modules = sorted((ROOT / "dashboard").rglob("*.py"))
    assert len(modules) > 10  # the walk found the dashboard
    others = [
        f"{path.relative_to(ROOT)}:{line}: {m}"
        for path in modules
        for line, m in _gateway_imports(path)
        if m != "gateway.read"
    ]
    assert others == []
