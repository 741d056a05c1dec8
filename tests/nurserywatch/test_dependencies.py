"""The dependency rules of docs/architecture.md, checked on the source (ast) for every module of every part.

One import graph of every module of edge, gateway, dashboard, firmware_sim and nurserywatch, counting
every import: at module level, inside functions, under ``if TYPE_CHECKING:``, relative, and
``from package import submodule``. Importing ``a.b.c`` runs ``a`` and ``a.b`` (the packages'
``__init__``) first, so those are loaded too. On that graph:

- no import cycle anywhere;
- the rules hold for everything importing a module *loads* (its transitive closure), not only for what
  it names itself:
  - edge runs alone on a Pi: it loads only edge and the shared package (nurserywatch, not its CLI);
  - gateway never loads edge, dashboard, firmware_sim or the CLI;
  - dashboard loads no edge or firmware_sim, and of the gateway only what ``gateway.read`` loads;
  - fleet (the fleet workers) loads no edge, dashboard or firmware_sim; the dashboard loads of it only
    what ``fleet.state`` loads (the board reads the workers' state, nothing else);
  - firmware_sim loads none of edge, gateway, dashboard (it writes bytes from the formats on its own);
  - the shared package loads no part;
  - only the composition package (nurserywatch.cli, and ``python -m nurserywatch`` which runs it)
    may load every part;
- decoders, signal analysis and rule logic are pure: no I/O library and no wall clock. Only the shells
  listed below may do I/O.

The checker is itself tested on a small synthetic graph, so a broken checker cannot pass silently.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("edge", "gateway", "fleet", "dashboard", "firmware_sim", "nurserywatch")
#: The composition package: the only place that wires every part together.
COMPOSITION = ("nurserywatch.cli", "nurserywatch.__main__")
#: What each part may not load, directly or through anything it imports.
MAY_NOT_LOAD: dict[str, tuple[str, ...]] = {
    "edge": ("gateway", "fleet", "dashboard", "firmware_sim", *COMPOSITION),
    "gateway": ("edge", "fleet", "dashboard", "firmware_sim", *COMPOSITION),
    #: The fleet tier reuses the gateway's pieces (lease, InfluxDB writer, signed heads, air rule names).
    "fleet": ("edge", "dashboard", "firmware_sim", *COMPOSITION),
    "dashboard": ("edge", "firmware_sim", *COMPOSITION),
    "firmware_sim": ("edge", "gateway", "fleet", "dashboard", *COMPOSITION),
    "nurserywatch": ("edge", "gateway", "fleet", "dashboard", "firmware_sim", *COMPOSITION),
    "composition": (),
}
#: The dashboard's one door into the gateway: of the gateway it loads only what this module loads.
GATEWAY_READ = "gateway.read"
#: The fleet board's one door into the fleet tier: the state model the workers write.
FLEET_READ = "fleet.state"

IO_LIBS = {
    "serial", "aiomqtt", "paho", "bleak", "bleak_retry_connector", "httpx", "sqlite3", "socket", "asyncio",
    "subprocess", "os", "time", "uvicorn", "fastapi",
}  # fmt: skip
#: The thin shells around the pure code, by subpackage or module: the only ones allowed to touch I/O.
SHELLS = (
    "edge.io", "edge.agent.runner", "edge.agent.doctor",
    "firmware_sim.io",
    "gateway.service", "gateway.db", "gateway.influx.writer", "gateway.influx.buffer",
    "gateway.records.store", "gateway.records.reader",
    "gateway.retention.store", "gateway.retention.job", "gateway.trends.reader",
    "gateway.child_data.store", "gateway.child_data.influx", "gateway.child_data.jobs",
    "gateway.ha",  # the lease (a JetStream key) and the journal (SQLite statements through JetStream)
    "gateway.integrations.home_assistant_bridge",  # Home Assistant discovery over MQTT
    "fleet.worker", "fleet.tsdb", "fleet.shares", "fleet.streams",
)  # fmt: skip
#: The parts whose modules outside SHELLS are logic.
PURE_PARTS = ("edge", "firmware_sim", "gateway", "fleet")

#: module name -> the modules importing it loads directly (each import and the packages above it).
Graph = Mapping[str, frozenset[str]]


# ---------------------------------------------------------------- the graph


def within(module: str, prefix: str) -> bool:
    """``module`` is ``prefix`` or inside the package ``prefix``."""
    return module == prefix or module.startswith(prefix + ".")


def packages_above(module: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``: what Python runs before ``a.b.c`` itself."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def module_files(root: Path, parts: Iterable[str] = PARTS) -> dict[str, Path]:
    """Every module of ``parts`` under ``root`` by dotted name (a package by its ``__init__``)."""
    found: dict[str, Path] = {}
    for part in parts:
        for path in (root / part).rglob("*.py"):
            dotted = path.relative_to(root).with_suffix("").parts
            found[".".join(dotted[:-1] if dotted[-1] == "__init__" else dotted)] = path
    return found


def imported_names(module: str, path: Path) -> set[str]:
    """Every name an import statement of the file names, made absolute: a module, or for
    ``from m import x`` both ``m`` and ``m.x`` (x may be a submodule). All statements count: module
    level, function bodies and ``if TYPE_CHECKING:`` alike."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from ..x import y` climbs level - 1 packages from this one
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            names.add(source)
            names |= {f"{source}.{alias.name}" for alias in node.names}
    return names


def build_graph(files: Mapping[str, Path]) -> dict[str, frozenset[str]]:
    graph: dict[str, frozenset[str]] = {}
    for module, path in files.items():
        loads: set[str] = set()
        for name in imported_names(module, path):
            while name and name not in files:  # `from m import function`: m; third-party names: nothing
                name = name.rpartition(".")[0]
            if name:
                loads |= {name, *packages_above(name)}
        # a module's own packages run before it, not because of it: no edge back up to them
        graph[module] = frozenset(loads - {module, *packages_above(module)})
    return graph


@cache
def project_graph() -> Graph:
    return build_graph(module_files(ROOT))


class Cycle(NamedTuple):
    """Modules that all load each other (a strongly connected component), and one shortest closed
    path through them (first module repeated at the end) to show where to cut."""

    modules: tuple[str, ...]
    loop: tuple[str, ...]

    def __str__(self) -> str:
        return f"{' -> '.join(self.loop)}  (all {len(self.modules)} in the cycle: {', '.join(self.modules)})"


def cycles(graph: Graph) -> list[Cycle]:
    """Every import cycle, one per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[Cycle] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(Cycle(tuple(sorted(component)), loop_through(graph, component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def loop_through(graph: Graph, component: set[str]) -> tuple[str, ...]:
    """A shortest closed path from the component's first module back to itself, inside the component."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    chain = [v]
                    while chain[-1] != start:
                        chain.append(came_from[chain[-1]])
                    return (*reversed(chain), start)
                if w not in came_from:
                    came_from[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def loaded_by(graph: Graph, module: str) -> set[str]:
    """Everything importing ``module`` loads: its packages, itself, and all they import, transitively."""
    seen: set[str] = set()
    todo = [*packages_above(module), module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return seen


def part_of(module: str) -> str:
    return "composition" if any(within(module, c) for c in COMPOSITION) else module.split(".")[0]


def forbidden_loads(graph: Graph, module: str) -> list[tuple[str, str]]:
    """What importing ``module`` loads against the rules: (loaded module, why not)."""
    loaded = loaded_by(graph, module)
    part = part_of(module)
    bad = [(m, f"{part} may not load {part_of(m)}") for m in sorted(loaded)
           if any(within(m, p) for p in MAY_NOT_LOAD[part])]  # fmt: skip
    if part == "dashboard":
        allowed = loaded_by(graph, GATEWAY_READ) if GATEWAY_READ in graph else set()
        why = f"not loaded by {GATEWAY_READ}" + ("" if GATEWAY_READ in graph else ", which does not exist")
        bad += [(m, why) for m in sorted(loaded) if within(m, "gateway") and m not in allowed]
        fleet_allowed = loaded_by(graph, FLEET_READ) if FLEET_READ in graph else set()
        bad += [
            (m, f"not loaded by {FLEET_READ}") for m in sorted(loaded) if within(m, "fleet") and m not in fleet_allowed
        ]
    return bad


def path_to(graph: Graph, module: str, target: str) -> list[str]:
    """One import chain from ``module`` (or a package above it) to ``target``, for the messages."""
    came_from: dict[str, str | None] = {m: None for m in [*packages_above(module), module]}
    frontier = list(came_from)
    while frontier:
        v = frontier.pop(0)
        if v == target:
            chain = [v]
            while (prev := came_from[chain[-1]]) is not None:
                chain.append(prev)
            return chain[::-1]
        for w in sorted(graph.get(v, ())):
            if w not in came_from:
                came_from[w] = v
                frontier.append(w)
    return []


# ---------------------------------------------------------------- the project's rules


def test_no_import_cycle() -> None:
    found = cycles(project_graph())
    assert not found, f"{len(found)} import cycle(s):\n" + "\n".join(f"  {c}" for c in found)


@pytest.mark.parametrize("module", sorted(project_graph()))
def test_parts_load_only_what_they_may(module: str) -> None:
    graph = project_graph()
    bad = forbidden_loads(graph, module)
    assert not bad, f"importing {module} loads:\n" + "\n".join(
        f"  {loaded} ({why}), via {' -> '.join(path_to(graph, module, loaded))}" for loaded, why in bad
    )


def pure_modules() -> list[str]:
    return sorted(m for m in project_graph()
                  if part_of(m) in PURE_PARTS and not any(within(m, s) for s in SHELLS))  # fmt: skip


@pytest.mark.parametrize("module", pure_modules())
def test_logic_is_sans_io(module: str) -> None:
    path = module_files(ROOT)[module]
    io = {name for name in imported_names(module, path) if name.split(".")[0] in IO_LIBS}
    assert not io, f"{module} is logic, not a shell: no I/O library and no wall clock, but it imports {sorted(io)}"


def test_the_shells_and_the_read_module_exist() -> None:
    """A shell entry or rule naming a module that moved would silently exempt nothing."""
    graph = project_graph()
    assert [s for s in SHELLS if not any(within(m, s) for m in graph)] == []
    assert GATEWAY_READ in graph, f"{GATEWAY_READ} is missing: the dashboard has no read module"


def test_no_test_module_imports_another() -> None:
    """Shared fixtures and helpers live in tests/support (fixtures registered by a conftest.py): a test
    module imported by another runs its module-level code twice and hides what it shares."""
    tests = ROOT / "tests"
    sideways = sorted(
        f"{path.relative_to(ROOT).as_posix()} imports {name}"
        for path in tests.rglob("*.py")
        for name in imported_names(".".join(path.relative_to(ROOT).with_suffix("").parts), path)
        if within(name, "tests") and any(p.startswith("test_") or p == "conftest" for p in name.split(".")[1:])
    )
    assert not sideways, "\n".join(sideways)


# ---------------------------------------------------------------- the checker itself


def write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_checker_reads_every_kind_of_import(tmp_path: Path) -> None:
    write(tmp_path, {
        "gateway/__init__.py": "",
        "gateway/engine/__init__.py": "",
        "gateway/engine/core.py": "from . import helpers\nfrom ..db.store import Store\n",
        "gateway/engine/helpers.py": "def f() -> None:\n    import gateway.service.mqtt\n",
        "gateway/db/__init__.py": "",
        "gateway/db/store.py": "from typing import TYPE_CHECKING\n"
                               "if TYPE_CHECKING:\n    from gateway.engine import core\n",
        "gateway/service/__init__.py": "",
        "gateway/service/mqtt.py": "import os\nfrom gateway.engine.core import run\n",
    })  # fmt: skip
    graph = build_graph(module_files(tmp_path, ["gateway"]))
    assert graph["gateway.engine.core"] == {"gateway.engine.helpers", "gateway.db", "gateway.db.store"}
    assert graph["gateway.engine.helpers"] == {"gateway.service", "gateway.service.mqtt"}  # inside a function
    assert graph["gateway.db.store"] == {"gateway.engine", "gateway.engine.core"}  # under TYPE_CHECKING
    assert graph["gateway.service.mqtt"] == {"gateway.engine", "gateway.engine.core"}  # `os` is not ours
    # both loops run through gateway.engine.core: one component, reported by its shortest loop
    assert cycles(graph) == [
        Cycle(
            ("gateway.db.store", "gateway.engine.core", "gateway.engine.helpers", "gateway.service.mqtt"),
            ("gateway.db.store", "gateway.engine.core", "gateway.db.store"),
        )
    ]


def test_checker_finds_cycles_and_forbidden_closures() -> None:
    toy: dict[str, frozenset[str]] = {
        "edge": frozenset(), "gateway": frozenset(), "dashboard": frozenset(), "nurserywatch": frozenset(),
        "nurserywatch.cli": frozenset(),
        "edge.agent": frozenset({"edge.decoder"}),
        "edge.decoder": frozenset({"nurserywatch.kit"}),
        "nurserywatch.kit": frozenset({"nurserywatch.util"}),
        "nurserywatch.util": frozenset({"gateway.rules"}),  # the shared package reaching into a part
        "gateway.rules": frozenset(),
        "gateway.read": frozenset({"gateway.db"}),
        "gateway.db": frozenset(),
        "gateway.engine": frozenset({"gateway.alerts"}),
        "gateway.alerts": frozenset({"gateway.engine"}),  # a cycle
        "dashboard.view": frozenset({"gateway.read"}),
        "dashboard.admin": frozenset({"gateway.engine"}),  # past the read module
        "nurserywatch.cli.main": frozenset({"edge.agent", "dashboard.view"}),
    }  # fmt: skip
    assert cycles(toy) == [
        Cycle(("gateway.alerts", "gateway.engine"), ("gateway.alerts", "gateway.engine", "gateway.alerts"))
    ]
    # two steps away, not a direct import: the closure counts
    assert forbidden_loads(toy, "edge.agent") == [("gateway.rules", "edge may not load gateway")]
    assert path_to(toy, "edge.agent", "gateway.rules") == [
        "edge.agent", "edge.decoder", "nurserywatch.kit", "nurserywatch.util", "gateway.rules"
    ]  # fmt: skip
    assert forbidden_loads(toy, "nurserywatch.kit") == [("gateway.rules", "nurserywatch may not load gateway")]
    assert forbidden_loads(toy, "dashboard.view") == []
    assert forbidden_loads(toy, "dashboard.admin") == [
        ("gateway.alerts", "not loaded by gateway.read"), ("gateway.engine", "not loaded by gateway.read")
    ]  # fmt: skip
    assert forbidden_loads(toy, "gateway.rules") == []
    assert forbidden_loads(toy, "nurserywatch.cli.main") == []  # composition may load every part
    no_read = {**{m: v for m, v in toy.items() if m != "gateway.read"}, "dashboard.view": frozenset({"gateway.db"})}
    assert forbidden_loads(no_read, "dashboard.view") == [
        ("gateway.db", "not loaded by gateway.read, which does not exist")
    ]  # fmt: skip
