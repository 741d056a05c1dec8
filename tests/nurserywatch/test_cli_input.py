"""The command's options at and past their ranges: a clear error and exit code 2, never a traceback;
and no command that acts on a site runs on the example kit because --config was forgotten."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nurserywatch.cli.main import KIT_ENV, app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "kit.example.yaml"
DEMO = REPO / "configs" / "kit.demo.yaml"

SITE_COMMANDS = [
    ["kit", "check"],
    ["kit", "provision", "--out", "OUT"],
    ["edge"],
    ["doctor"],
    ["gateway", "--db", "OUT/gw.sqlite3"],
    ["dashboard", "--data-dir", "OUT"],
    ["data", "export", "--child", "c001", "--out", "OUT"],
    ["data", "erase", "--child", "c001", "--yes"],
]


def _args(cmd: list[str], tmp_path: Path) -> list[str]:
    return [str(tmp_path / a[4:]) if a.startswith("OUT") else a for a in cmd]


@pytest.mark.parametrize("cmd", SITE_COMMANDS, ids=[" ".join(c[:2]) for c in SITE_COMMANDS])
def test_site_commands_need_a_kit(cmd: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KIT_ENV, raising=False)
    monkeypatch.chdir(REPO)  # where configs/kit.example.yaml used to be picked up silently
    result = runner.invoke(app, _args(cmd, tmp_path))
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert result.stderr == (
        "error: no kit file: give --config KIT.yaml or set $NURSERYWATCH_KIT (configs/kit.example.yaml is an "
        "example to copy, not a site)\n"
    )


def test_the_kit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KIT_ENV, str(EXAMPLE))
    result = runner.invoke(app, ["kit", "check"])
    assert result.exit_code == 0 and f"{EXAMPLE}: OK — site 'himawari'" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dashboard", "--config", str(DEMO), "--port", "70000"], "Invalid value for '--port'"),
        (["dashboard", "--config", str(DEMO), "--port", "-1"], "Invalid value for '--port'"),
        (["demo", "--port", "0"], "Invalid value for '--port'"),
        (["demo", "--cluster", "--broker", "mqtt://127.0.0.1:1"], "--cluster runs its own NATS nodes as the brokers"),
        (["gateway", "--config", str(DEMO), "--nats-credentials", "x.yaml"],
         "--nats, --nats-credentials and --instance are for --transport jetstream"),
        (["gateway", "--config", str(DEMO), "--transport", "jetstream", "--nats", "nats://u:p@127.0.0.1:1",
          "--nats-credentials", "x.yaml"], "give the user either in the URL or in --nats-credentials, not both"),
        (["gateway", "--config", str(DEMO), "--transport", "jetstream", "--nats", "tls://127.0.0.1:1",
          "--nats-credentials", "/nonexistent/gateway.yaml"], "--nats-credentials: /nonexistent/gateway.yaml"),
        (["sim", "--config", str(DEMO), "--duration", "nan"], "--duration nan: expected a number of seconds"),
        (["sim", "--config", str(DEMO), "--duration", "-5"], "--duration -5.0: expected a number of seconds"),
        (["doctor", "--config", str(DEMO), "--timeout", "nan"], "--timeout nan: expected a number of seconds"),
        (["doctor", "--config", str(DEMO), "--timeout", "1e300"], "more than 0 and at most 600"),
        (["users", "list", "--data-dir", "/dev/null"], "--data-dir /dev/null: cannot open the users' database"),
        (["data", "export", "--config", str(EXAMPLE), "--child", "c001", "--out", "OUT", "--by", "x" * 201],
         "--by: expected a name of 1–200 characters (got 201)"),
    ],
)
def test_out_of_range_options_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(app, _args(args, tmp_path))
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert message in result.stderr and "Traceback" not in result.stderr
