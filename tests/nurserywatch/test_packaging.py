"""pyproject.toml's extras against what the code imports: `pip install 'nurserywatch[edge]'` on a
Raspberry Pi must give a working edge agent and no web server, and every part's extra must hold what
that part loads.

1. On the source (ast): the third-party modules a part loads must come from distributions that the base
   dependencies or the part's extra declare. What a part loads is its own modules and, transitively,
   every project module they import (inside functions too, not under ``if TYPE_CHECKING:``), plus the
   command's shell: ``nurserywatch/cli/main.py`` at module level only, since each subcommand imports its
   part inside the command. Import names are mapped to distributions by importlib.metadata.
2. In a subprocess where the web and broker packages cannot be imported (a meta path finder raises
   ImportError for them, as a missing package would), ``nurserywatch edge --help``, ``doctor --help``
   and ``--version`` work and the edge agent's modules import.

The real check needs a package index and half a minute, so it is run by hand (from a copy of the tree
without .venv)::

    python3 -m venv /tmp/venv-edge && /tmp/venv-edge/bin/pip install '/tmp/copy[edge]'
    /tmp/venv-edge/bin/nurserywatch edge --help; /tmp/venv-edge/bin/python -c 'import fastapi'  # fails
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from nurserywatch import __version__

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("edge", "gateway", "fleet", "dashboard", "firmware_sim", "nurserywatch")
#: The console command's module: only its module-level imports run before a subcommand's own.
CLI = "nurserywatch.cli.main"
#: What each extra is for: the project packages or modules whose loads it must cover, together with
#: the base dependencies. Every extra also covers the command's shell (CLI at module level); of the
#: composition package (nurserywatch.cli) only what is named, except for demo and all, which run it all.
EXTRA_COVERS: dict[str, tuple[str, ...]] = {
    "": ("nurserywatch",),  # the base: the shared package
    "edge": ("edge",),
    "gateway": ("gateway", "nurserywatch.cli.provision_files"),  # `kit provision` runs on the broker's host
    "fleet": ("fleet",),
    "dashboard": ("dashboard",),
    "sim": ("firmware_sim",),
    "demo": FIRST_PARTY,
    "all": FIRST_PARTY,
}
WHOLE = ("demo", "all")
COMPOSITION = ("nurserywatch.cli", "nurserywatch.__main__")
#: What a Pi running only the edge agent must never import: the dashboard's web stack, the gateway's
#: InfluxDB client and the demo's embedded broker.
NOT_ON_THE_EDGE = ("fastapi", "starlette", "uvicorn", "jinja2", "argon2", "pydantic_settings", "httpx", "amqtt")


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def normalise(dist: str) -> str:
    """PEP 503 form of a distribution name."""
    return re.sub(r"[-_.]+", "-", dist).lower()


# ---------------------------------------------------------------- what pyproject declares


@cache
def project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        table: dict[str, object] = tomllib.load(fh)["project"]
    return table


def declared(extra: str) -> set[str]:
    """The distributions ``nurserywatch[extra]`` installs by name ("" for the base), self-references
    (``nurserywatch[edge,gateway]``) followed."""
    requirements = project()["dependencies"]
    extras = project()["optional-dependencies"]
    assert isinstance(requirements, list) and isinstance(extras, dict)
    found: set[str] = set()
    todo, seen = [*requirements, *(extras[extra] if extra else [])], set()
    while todo:
        requirement = todo.pop()
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", requirement)
        assert match, f"cannot read the requirement {requirement!r}"
        name = normalise(match[1])
        if name != "nurserywatch":
            found.add(name)
            continue
        for sub in (s.strip() for s in (match[2] or "").split(",")):
            if sub not in seen:
                seen.add(sub)
                todo.extend(extras[sub])
    return found


# ---------------------------------------------------------------- what the code loads


@cache
def module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for part in FIRST_PARTY:
        for path in (ROOT / part).rglob("*.py"):
            dotted = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(dotted[:-1] if dotted[-1] == "__init__" else dotted)] = path
    return found


def _runtime_imports(tree: ast.Module, module_level_only: bool) -> Iterable[ast.Import | ast.ImportFrom]:
    """Import statements that run when the code does: none under ``if TYPE_CHECKING:``; with
    ``module_level_only``, none inside functions either."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            todo.extend(node.orelse)
        elif not (module_level_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)):
            todo.extend(ast.iter_child_nodes(node))


@cache
def direct_imports(module: str) -> tuple[frozenset[str], frozenset[str]]:
    """(project modules, third-party top-level names) that ``module`` itself imports at run time."""
    path = module_files()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(), filename=str(path)), module == CLI):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            source = ".".join([*base, node.module] if node.module else base)
        else:
            source = node.module or ""
        names |= {f"{source}.{alias.name}" for alias in node.names} | {source}
    project_modules: set[str] = set()
    third_party: set[str] = set()
    for name in names:
        top = name.partition(".")[0]
        if top in FIRST_PARTY:
            while name not in module_files():  # `from m import function`: m
                name = name.rpartition(".")[0]
            parts = name.split(".")
            project_modules |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}  # packages run first
        elif top not in sys.stdlib_module_names and top != "__future__":
            third_party.add(top)
    return frozenset(project_modules - {module}), frozenset(third_party)


def third_party_loaded(roots: Iterable[str]) -> dict[str, str]:
    """Third-party top-level name -> one project module importing it, over everything ``roots`` load."""
    seen: set[str] = set()
    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        project_modules, third_party = direct_imports(module)
        todo.extend(project_modules)
        for name in third_party:
            found.setdefault(name, module)
    return found


def roots_of(extra: str) -> list[str]:
    covered = EXTRA_COVERS[extra]
    return [
        CLI,
        *(
            m
            for m in module_files()
            if any(within(m, p) for p in covered)
            and (extra in WHOLE or m in covered or not any(within(m, c) for c in COMPOSITION))
        ),
    ]


# ---------------------------------------------------------------- the checks


@pytest.mark.parametrize("extra", list(EXTRA_COVERS), ids=[e or "base" for e in EXTRA_COVERS])
def test_each_extra_declares_what_its_part_imports(extra: str) -> None:
    distributions = packages_distributions()
    have = declared(extra)
    missing = {
        f"{name} (imported by {module}; distribution {'/'.join(distributions.get(name, ['?']))})"
        for name, module in third_party_loaded(roots_of(extra)).items()
        if not have & {normalise(d) for d in distributions.get(name, [])}
    }
    label = f"nurserywatch[{extra}]" if extra else "the base dependencies"
    assert not missing, f"{label} does not declare: " + "; ".join(sorted(missing))


def test_the_edge_extra_holds_no_web_server_or_broker() -> None:
    distributions = packages_distributions()
    edge_install = declared("edge")
    web = {normalise(d) for name in NOT_ON_THE_EDGE for d in distributions.get(name, [name])}
    assert not edge_install & web
    loaded = set(third_party_loaded(roots_of("edge")))
    assert not loaded & set(NOT_ON_THE_EDGE)
    assert {"serial", "bleak", "numpy", "cryptography"} <= loaded  # the walk reached the I/O and the DSP


def test_every_extra_of_the_issue_exists() -> None:
    extras = project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert {"edge", "gateway", "dashboard", "sim", "demo", "all", "test"} <= set(extras)
    assert declared("all") >= declared("demo") >= declared("edge") | declared("gateway") | declared("dashboard")
    assert "amqtt" in declared("demo") and "paho-mqtt" in declared("")


EDGE_ONLY = """
import json, sys

BLOCKED = set(sys.argv[1].split(","))


class NotInstalled:
    # As if the package were missing: an [edge]-only install does not have it.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())

from typer.testing import CliRunner

from nurserywatch.cli.main import app

import edge.agent.doctor, edge.agent.runner  # what `edge` and `doctor` import when they run

runner = CliRunner()
results = {
    " ".join(args): (r.exit_code, r.output, repr(r.exception) if r.exit_code else "")
    for args in (["--version"], ["edge", "--help"], ["doctor", "--help"])
    for r in [runner.invoke(app, args)]
}
results["loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
print(json.dumps(results))
"""


def test_edge_runs_without_the_web_and_broker_packages() -> None:
    done = subprocess.run(
        [sys.executable, "-c", EDGE_ONLY, ",".join(NOT_ON_THE_EDGE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results.pop("loaded") == []
    assert results["--version"][:2] == [0, f"{__version__}\n"]
    for command in ("edge --help", "doctor --help"):
        code, output, exception = results[command]
        assert code == 0, f"{command}: {exception}\n{output}"
        assert "--broker" in output


def test_the_package_data_ships_the_recordings_with_their_attribution_and_the_licence() -> None:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        setuptools = tomllib.load(fh)["tool"]["setuptools"]
    shipped = [
        path for pattern in setuptools["package-data"]["firmware_sim"] for path in (ROOT / "firmware_sim").glob(pattern)
    ]
    for folder in ("resp_belt", "resp_belt_nights"):
        recordings = ROOT / "firmware_sim" / "recordings" / folder
        assert sorted(recordings.glob("*.csv.gz")) and set(recordings.iterdir()) <= set(shipped)
        readme = (recordings / "README.md").read_text()
        assert "CC BY 4.0" in readme and "10.6084/m9.figshare.26013157" in readme  # licence and source
    assert project()["license-files"] == ["LICENSE"]
    assert "Apache License\n                           Version 2.0" in (ROOT / "LICENSE").read_text()
