"""The `nurserywatch` command. Each subcommand is a thin shell: parse options, load and validate
files (clear message + exit code 2 on a bad file, never a traceback), then run one part."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import typer

from nurserywatch import __version__
from nurserywatch.cli.runtime import run_until_signalled, setup_logging
from nurserywatch.kit import Kit, KitError, load_kit
from nurserywatch.mqtt import BrokerURL

if TYPE_CHECKING:
    from gateway.child_data.jobs import Format, Plan

app = typer.Typer(
    help="nurserywatch — open nap-check and air-quality monitoring for nurseries (保育園の午睡チェック).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
kit_app = typer.Typer(help="Work with kit files (the description of a site).", no_args_is_help=True)
app.add_typer(kit_app, name="kit")
records_app = typer.Typer(
    help="Nap-check records (午睡チェック表): verify the hash chain, export a room's day.", no_args_is_help=True
)
app.add_typer(records_app, name="records")

EXIT_BAD_INPUT = 2

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Kit file (YAML) describing the site.", show_default=True)
]
BrokerOpt = Annotated[
    str,
    typer.Option(
        "--broker",
        envvar="NURSERYWATCH_BROKER",
        help="MQTT broker URL: mqtt://[user:pass@]host:port or mqtts://… (or $NURSERYWATCH_BROKER, which keeps "
        "a password out of the process list)",
    ),
]
LogOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]
AgentOpt = Annotated[
    str | None, typer.Option("--agent", help="This agent's id in the kit (default: the kit's only agent).")
]


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _kit(path: Path) -> Kit:
    try:
        return load_kit(path)
    except KitError as exc:
        fail(str(exc))


def _broker(url: str) -> BrokerURL:
    try:
        return BrokerURL.parse(url)
    except ValueError as exc:
        fail(str(exc))


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _top_level(
    show_version: Annotated[
        bool,
        # Eager: answered before any subcommand is looked for, as `nurserywatch --version` expects.
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    # Options of `nurserywatch` itself; no docstring, so the help stays the Typer(help=…) text.
    del show_version


@kit_app.command("check")
def kit_check(config: ConfigOpt = Path("configs/kit.example.yaml")) -> None:
    """Validate a kit file and summarise it. Exit code 2 names the file and field when it is wrong."""
    kit = _kit(config)
    bound = sum(1 for d in kit.devices if d.child)
    typer.echo(
        f"{config}: OK — site {kit.site!r} ({kit.name}), {len(kit.rooms)} rooms, {len(kit.agents)} agents, "
        f"{len(kit.devices)} devices ({bound} bound to children), {len(kit.children)} children"
    )


@kit_app.command("provision")
def kit_provision(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write into (existing secrets there are kept).")],
    config: ConfigOpt = Path("configs/kit.example.yaml"),
    hostname: Annotated[
        list[str] | None,
        typer.Option(
            "--hostname",
            help="A name or IP address clients use to reach the broker (repeat it); the TLS certificate carries "
            "these plus localhost, 127.0.0.1 and ::1.",
        ),
    ] = None,
    bind: Annotated[str, typer.Option("--bind", help="Address of the plain MQTT listener.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the plain MQTT listener (0: none).")] = 1883,
    tls_bind: Annotated[
        str | None, typer.Option("--tls-bind", help="Address of the TLS listener (default: every interface).")
    ] = None,
    tls_port: Annotated[int, typer.Option("--tls-port", help="Port of the TLS listener (0: none).")] = 8883,
    broker_dir: Annotated[
        str | None,
        typer.Option(
            "--broker-dir",
            help="Where the mosquitto/ files will be on the broker's machine, e.g. /etc/mosquitto/nurserywatch "
            "(default: OUT/mosquitto as an absolute path).",
        ),
    ] = None,
    client_certs: Annotated[
        bool, typer.Option("--client-certs", help="Also issue client certificates and require one on TLS.")
    ] = False,
) -> None:
    """Generate the site's MQTT security: a Mosquitto config without anonymous access, a password per
    edge agent, gateway and dashboard, ACLs from the kit, a site CA and the broker's TLS certificate,
    and one credentials file per part (docs/deploy.md, "Securing MQTT")."""
    import datetime as dt

    from nurserywatch.cli.provision import ProvisionError
    from nurserywatch.cli.provision_files import ProvisionOptions, provision

    kit = _kit(config)
    opts = ProvisionOptions(
        hostnames=tuple(hostname or ()),
        bind=bind,
        port=port,
        tls_bind=tls_bind or None,
        tls_port=tls_port,
        broker_dir=broker_dir,
        client_certs=client_certs,
    )
    try:
        result = provision(kit, out, opts, dt.datetime.now(dt.UTC))
    except ProvisionError as exc:
        fail(str(exc))
    kept = [u for u in result.users if u not in result.new_passwords]
    typer.echo(f"site {kit.site!r}: MQTT security written to {out}/")
    typer.echo(f"  mosquitto/   config, ACL, password file for {len(result.users)} users "
               f"(passwords: {len(result.new_passwords)} new, {len(kept)} kept), TLS certificate")
    if result.names is not None and result.server_cert_expires is not None:
        typer.echo(f"               certificate for {', '.join(result.names.all)}; "
                   f"valid until {result.server_cert_expires:%Y-%m-%d} (run this again before then)")
    typer.echo(f"  credentials/ one file per user ({', '.join(result.users)}) and ca.crt — secret, 0600")
    typer.echo(f"  ca/          the site CA ({'new' if result.ca_created else 'kept'}); ca.key issues certificates, "
               "keep it off the network")
    for stale in result.stale:
        typer.echo(f"  note: {stale} is for a user the kit no longer has; it no longer works — delete it")
    typer.echo("next: docs/deploy.md, section \"Securing MQTT\"")


DbOpt = Annotated[Path, typer.Option("--db", help="The gateway's SQLite file.")]
EXIT_TAMPERED = 1


@records_app.command("verify")
def records_verify(
    db: DbOpt = Path("run/nurserywatch.sqlite3"),
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head", help="SEQ:HASH noted earlier (e.g. from an export): fail unless it is still there."
        ),
    ] = None,
) -> None:
    """Walk the records' hash chain. Exit 0 when intact; 1 naming the first entry that was edited,
    deleted or inserted; 2 when the file cannot be read."""
    from gateway.records.reader import RecordReader, RecordStoreError

    try:
        result = RecordReader(db).verify()
        anchor = _head_anchor(expect_head) if expect_head else None
        if result.ok and anchor is not None:
            stored = RecordReader(db).hash_at(anchor[0]) if anchor[0] <= result.head.seq else None
            if stored != anchor[1]:
                fail(f"{db}: entry {anchor[0]}: not the entry noted as {expect_head} (rewritten or cut)", EXIT_TAMPERED)
    except RecordStoreError as exc:
        fail(str(exc))
    if not result.ok:
        fail(f"{db}: {result.problem}", EXIT_TAMPERED)
    redacted = f" ({result.redacted} redacted by `data erase`)" if result.redacted else ""
    head = f"{result.head.seq}:{result.head.hash}"
    typer.echo(f"{db}: OK — {result.entries} entries{redacted}, chain intact; head {head}")


def _head_anchor(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        fail(f"--expect-head {text!r}: expected SEQ:HASH (a number, a colon and 64 hex digits)")
    return int(seq), digest.lower()


@records_app.command("export")
def records_export(
    room: Annotated[str, typer.Option("--room", help="Room id (as in the kit).")],
    day: Annotated[str, typer.Option("--date", help="Local date, YYYY-MM-DD.")],
    db: DbOpt = Path("run/nurserywatch.sqlite3"),
    fmt: Annotated[str, typer.Option("--format", help="csv (UTF-8 with BOM, for Excel) or json.")] = "csv",
    lang: Annotated[str, typer.Option("--lang", help="Column headers and labels: ja or en.")] = "ja",
    tz: Annotated[
        str | None,
        typer.Option("--tz", help="Time zone of --date and of the times shown (default: the kit's, else Asia/Tokyo)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Kit file: the children's names and the site's time zone.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of standard output.")] = None,
) -> None:
    """Export one room's nap-check records of one day. The chain is verified first: when it is
    broken the export is still written, with a warning, and the exit code is 1."""
    import datetime as dt
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from gateway.records.export import build_sheet, day_bounds, to_csv, to_json
    from gateway.records.reader import RecordReader, RecordStoreError

    if fmt not in ("csv", "json") or lang not in ("ja", "en"):
        fail(f"--format must be csv or json (got {fmt!r}); --lang ja or en (got {lang!r})")
    kit = _kit(config) if config else None
    names = {c.id: c.nickname for c in kit.children if c.nickname} if kit else {}
    tz = tz or (kit.timezone if kit else "Asia/Tokyo")
    try:
        date = dt.date.fromisoformat(day)
        zone = ZoneInfo(tz)
    except ValueError:
        fail(f"--date {day!r}: expected YYYY-MM-DD")
    except ZoneInfoNotFoundError:
        fail(f"--tz {tz!r}: unknown time zone")
    reader = RecordReader(db)
    try:
        chain = reader.verify()
        records, followups = reader.records(room, *day_bounds(date, zone))
        if not records and room not in reader.rooms():
            fail(f"{db}: no nap-check records for room {room!r} (rooms: {', '.join(reader.rooms()) or 'none'})")
    except RecordStoreError as exc:
        fail(str(exc))
    rows = build_sheet(records, followups, zone, names)
    if fmt == "csv":
        data = to_csv(rows, "ja" if lang == "ja" else "en", zone)
    else:
        data = to_json(rows, [*records, *followups], room=room, day=date, tz=zone, chain=chain).encode()
    if out is None:
        typer.echo(data, nl=False)
    else:
        out.write_bytes(data)
        typer.echo(f"{out}: {len(rows)} records of room {room!r} on {date}", err=True)
    if chain.ok:  # the anchor to note (on the printout) for a later `records verify --expect-head`
        typer.echo(f"chain intact: {chain.entries} entries, head {chain.head.seq}:{chain.head.hash}", err=True)
    else:
        fail(f"{db}: the record chain is broken — {chain.problem}; this export may hold altered records", EXIT_TAMPERED)


@app.command()
def sim(
    config: ConfigOpt = Path("configs/kit.demo.yaml"),
    scenario: Annotated[
        Path, typer.Option("--scenario", "-s", help="Scenario file (YAML) scripting device events over time.")
    ] = Path("configs/scenarios/demo.yaml"),
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many seconds (default: run until Ctrl-C).")
    ] = None,
    log_level: LogOpt = "info",
) -> None:
    """Simulate devices: emit the exact bytes real sensors send on pseudo-terminals at the kit's serial
    port paths (symlinks), following a scenario. Takes a kit file and a scenario file."""
    setup_logging(log_level)
    kit = _kit(config)
    from firmware_sim.io.runner import run_sim
    from firmware_sim.scenario import ScenarioError, load_scenario

    try:
        scen = load_scenario(scenario)
    except ScenarioError as exc:
        fail(str(exc))
    from firmware_sim.io.pty_device import PortError

    try:
        run_until_signalled(run_sim(kit, scen, duration_s=duration))
    except (ScenarioError, PortError) as exc:  # the scenario does not fit the kit, or a port path is unusable
        fail(str(exc))


@app.command()
def edge(
    config: ConfigOpt = Path("configs/kit.example.yaml"),
    agent: AgentOpt = None,
    broker: BrokerOpt = "mqtt://127.0.0.1:1883",
    log_level: LogOpt = "info",
) -> None:
    """Run the edge agent (on the Raspberry Pi): read this agent's devices from the kit over serial,
    decode, classify and publish readings to the MQTT broker."""
    setup_logging(log_level)
    kit = _kit(config)
    agent_id = _agent(kit, agent)
    from edge.agent.runner import run_edge
    from nurserywatch.clock import SystemClock

    run_until_signalled(run_edge(kit, agent_id, _broker(broker), SystemClock()))


@app.command()
def doctor(
    config: ConfigOpt = Path("configs/kit.example.yaml"),
    agent: AgentOpt = None,
    broker: BrokerOpt = "mqtt://127.0.0.1:1883",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds each serial device has to answer.")] = 3.0,
) -> None:
    """Check this machine for the edge agent: each serial port present, openable and answering as
    its device; the Bluetooth adapter; the broker (reachable, credentials); the clock; the spool's
    disk. Prints one ✓/✗ line per check with advice; exit code 0 when all pass, 1 otherwise."""
    import asyncio

    setup_logging("error")
    kit = _kit(config)
    agent_id = _agent(kit, agent)
    url = _broker(broker)
    from edge.agent.doctor import format_checks, run_doctor

    checks = asyncio.run(run_doctor(kit, agent_id, url, serial_timeout_s=timeout))
    typer.echo(f"nurserywatch doctor — kit {config}, agent {agent_id}")
    typer.echo(format_checks(checks))
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)


def _agent(kit: Kit, agent: str | None) -> str:
    ids = [a.id for a in kit.agents]
    if agent is None:
        if len(ids) != 1:
            fail(f"the kit has {len(ids)} agents ({', '.join(ids)}); choose one with --agent")
        return ids[0]
    if agent not in ids:
        fail(f"--agent {agent!r} is not in the kit (agents: {', '.join(ids)})")
    return agent


@app.command()
def gateway(
    config: ConfigOpt = Path("configs/kit.example.yaml"),
    broker: BrokerOpt = "mqtt://127.0.0.1:1883",
    db: Annotated[Path, typer.Option("--db", help="SQLite file for readings, alerts and audit log.")] = Path(
        "run/nurserywatch.sqlite3"
    ),
    rules: Annotated[Path, typer.Option("--rules", help="Rule thresholds (YAML).")] = Path("configs/rules.yaml"),
    records: Annotated[
        Path | None,
        typer.Option(
            "--records", help="Nap-check record settings (YAML, e.g. configs/records.yaml; default: built-in)."
        ),
    ] = None,
    metrics_port: Annotated[
        int, typer.Option("--metrics-port", help="Serve Prometheus metrics at /metrics on this port (0: off).")
    ] = 0,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address for /metrics (loopback by default).")
    ] = "127.0.0.1",
    log_level: LogOpt = "info",
) -> None:
    """Run the gateway: validate and store readings, judge them with the rules, publish alerts and
    apply acknowledgements. Takes a kit file, a rules file, a database path and the broker URL."""
    setup_logging(log_level)
    kit = _kit(config)
    from gateway.config import RulesError, check_rules_fit_kit, load_rules
    from gateway.records.entries import RecordsConfig, RecordsError, load_records_config
    from gateway.service.mqtt import run_gateway
    from nurserywatch.clock import SystemClock

    try:
        rules_cfg = load_rules(rules)
        check_rules_fit_kit(rules_cfg, kit, rules)
        records_cfg = load_records_config(records) if records else RecordsConfig()
        records_cfg.check_kit(kit, str(records))
    except (RulesError, RecordsError) as exc:
        fail(str(exc))
    db.parent.mkdir(parents=True, exist_ok=True)
    if not 0 <= metrics_port <= 65535:
        fail(f"--metrics-port {metrics_port}: not a port (1-65535, or 0 for off)")
    try:
        run_until_signalled(run_gateway(kit, _broker(broker), db, rules_cfg, SystemClock(), records=records_cfg,
                                        metrics_host=metrics_host, metrics_port=metrics_port or None))  # fmt: skip
    except OSError as exc:  # the metrics port is taken
        fail(exc.strerror or str(exc))


@app.command()
def dashboard(
    config: ConfigOpt = Path("configs/kit.example.yaml"),
    broker: BrokerOpt = "mqtt://127.0.0.1:1883",
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port.")] = 8080,
    db: Annotated[
        Path, typer.Option("--db", help="The gateway's SQLite file (read-only: records, history, trends).")
    ] = Path("run/nurserywatch.sqlite3"),
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the dashboard keeps its own database (users, audit log).")
    ] = Path("run"),
    rules: Annotated[
        Path, typer.Option("--rules", help="The gateway's rule thresholds (YAML): the bands on the trend charts.")
    ] = Path("configs/rules.yaml"),
    metrics_token_file: Annotated[
        Path | None,
        typer.Option("--metrics-token-file", help="/metrics requires this bearer token (default: loopback only)."),
    ] = None,
    log_level: LogOpt = "info",
) -> None:
    """Run the staff dashboard (FastAPI): live room view with alerts and acknowledgement, JSON API."""
    setup_logging(log_level)
    kit = _kit(config)
    from dashboard.app import serve_dashboard
    from gateway.config import RulesError, check_rules_fit_kit, load_rules

    try:
        rules_cfg = load_rules(rules)
        check_rules_fit_kit(rules_cfg, kit, rules)
    except RulesError as exc:
        fail(str(exc))

    metrics_token = None
    if metrics_token_file is not None:
        try:
            metrics_token = metrics_token_file.read_text().strip()
        except OSError as exc:
            fail(f"--metrics-token-file {metrics_token_file}: {exc.strerror}")
        if len(metrics_token) < 16:
            fail(f"--metrics-token-file {metrics_token_file}: the token must be at least 16 characters")
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        run_until_signalled(serve_dashboard(kit, _broker(broker), host, port, gateway_db=db, data_dir=data_dir,
                                            rules=rules_cfg, kit_path=config, metrics_token=metrics_token))  # fmt: skip
    except OSError as exc:  # typically the port is taken
        fail(exc.strerror or str(exc))


@app.command()
def demo(
    config: ConfigOpt = Path("configs/kit.demo.yaml"),
    scenario: Annotated[Path, typer.Option("--scenario", "-s", help="Scenario for the simulated devices.")] = Path(
        "configs/scenarios/demo.yaml"
    ),
    rules: Annotated[Path, typer.Option("--rules", help="Rule thresholds (YAML).")] = Path("configs/rules.yaml"),
    broker: Annotated[
        str | None,
        typer.Option("--broker", help="Use this MQTT broker instead of the embedded one (mqtt://host:port)."),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Dashboard HTTP port.")] = 8080,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where the demo keeps its database.")] = Path("run"),
    log_level: LogOpt = "warning",
) -> None:
    """Start everything on this machine: an embedded MQTT broker (127.0.0.1) unless --broker is given,
    simulated sensors on pseudo-terminals, the edge agent, the gateway and the dashboard. Prints the
    dashboard URL; a prone alert appears within the first minute. Ctrl-C stops everything."""
    setup_logging(log_level)
    kit = _kit(config)
    from firmware_sim.scenario import ScenarioError, load_scenario
    from gateway.config import RulesError, check_rules_fit_kit, load_rules
    from nurserywatch.cli.demo import check_port_free, run_demo

    try:
        scen = load_scenario(scenario)
        rules_cfg = load_rules(rules)
        check_rules_fit_kit(rules_cfg, kit, rules)
        check_port_free("127.0.0.1", port)
    except (ScenarioError, RulesError, ValueError) as exc:
        fail(str(exc))
    run_until_signalled(
        run_demo(
            kit,
            scen,
            rules_cfg,
            broker=_broker(broker) if broker else None,
            port=port,
            data_dir=data_dir,
            kit_path=config,
        )
    )


# ---------------------------------------------------------------- dashboard users (login and roles)

users_app = typer.Typer(
    help="Dashboard users: the first admin, add, change password, role, disable (docs/dashboard.md).",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")
UsersDirOpt = Annotated[
    Path, typer.Option("--data-dir", help="The dashboard's data folder (holds dashboard.sqlite3).")
]
UsernameOpt = Annotated[str, typer.Option("--username", "-u", help="Login name: letters, digits, . _ @ -")]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option("--password-file", help="Read the password from the first line of this file instead of a prompt."),
]
DisplayNameOpt = Annotated[
    str, typer.Option("--display-name", help="The name shown as who acknowledged or checked (e.g. 田中).")
]


def _password(password_file: Path | None) -> str:
    if password_file is None:
        return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))
    try:
        lines = password_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{password_file}: cannot read the password: {exc}")
    if not lines or not lines[0]:
        fail(f"{password_file}: the first line (the password) is empty")
    return lines[0]


def _user_change(data_dir: Path, action: str, target: str, change: Callable[[Any, int], str]) -> None:
    """Open the dashboard's user database, make one change, audit it as done from the command line."""
    from dashboard.auth.deps import open_store
    from dashboard.auth.models import AuthPolicy
    from dashboard.auth.store import UserError
    from nurserywatch.clock import SystemClock

    store = open_store(data_dir, AuthPolicy())
    try:
        now = SystemClock().now_ms()
        message = change(store, now)
        store.audit(now, None, action, target, "from the command line", "cli")
    except (UserError, ValueError) as exc:
        fail(str(exc))
    finally:
        store.close()
    typer.echo(message)


def _add_user(data_dir: Path, username: str, role_name: str, display_name: str, password_file: Path | None) -> None:
    from dashboard.auth.models import Role

    try:
        role = Role.parse(role_name)
    except ValueError as exc:
        fail(str(exc))
    password = _password(password_file)

    def add(store: Any, now: int) -> str:
        user = store.add_user(username, password, role, display_name, now)
        return f"added {user.username} ({role.label}) to {data_dir}/dashboard.sqlite3"

    _user_change(data_dir, "user.add", username.lower(), add)


@users_app.command("create-admin")
def users_create_admin(
    data_dir: UsersDirOpt,
    username: UsernameOpt,
    password_file: PasswordFileOpt = None,
    display_name: DisplayNameOpt = "",
) -> None:
    """Create an admin (the first one, or another to recover access). The password is asked twice."""
    _add_user(data_dir, username, "admin", display_name, password_file)


@users_app.command("add")
def users_add(
    data_dir: UsersDirOpt,
    username: UsernameOpt,
    role: Annotated[str, typer.Option("--role", help="staff, manager or admin.")] = "staff",
    password_file: PasswordFileOpt = None,
    display_name: DisplayNameOpt = "",
) -> None:
    """Add a user with a role (staff: view, acknowledge, confirm, assign; manager: also trends and exports;
    admin: also users and the kit)."""
    _add_user(data_dir, username, role, display_name, password_file)


@users_app.command("passwd")
def users_passwd(data_dir: UsersDirOpt, username: UsernameOpt, password_file: PasswordFileOpt = None) -> None:
    """Set a user's password; their open sessions end."""
    password = _password(password_file)

    def change(store: Any, now: int) -> str:
        store.set_password(username, password, now)
        return f"password of {username.lower()} changed; their sessions ended"

    _user_change(data_dir, "user.passwd", username.lower(), change)


@users_app.command("role")
def users_role(
    data_dir: UsersDirOpt,
    username: UsernameOpt,
    role: Annotated[str, typer.Option("--role", help="staff, manager or admin.")],
) -> None:
    """Change a user's role (the last enabled admin cannot be demoted)."""
    from dashboard.auth.models import Role

    def change(store: Any, now: int) -> str:
        user = store.set_role(username, Role.parse(role), now)
        return f"{user.username} is now {user.role.label}"

    _user_change(data_dir, "user.role", username.lower(), change)


@users_app.command("disable")
def users_disable(
    data_dir: UsersDirOpt,
    username: UsernameOpt,
    enable: Annotated[bool, typer.Option("--enable", help="Enable the user again instead.")] = False,
) -> None:
    """Disable a user (their sessions end at once; the last enabled admin cannot be disabled)."""

    def change(store: Any, now: int) -> str:
        store.set_disabled(username, not enable, now)
        return f"{username.lower()} {'enabled' if enable else 'disabled'}"

    _user_change(data_dir, "user.enable" if enable else "user.disable", username.lower(), change)


@users_app.command("list")
def users_list(data_dir: UsersDirOpt) -> None:
    """List the users: name, role, enabled, display name."""
    from dashboard.auth.deps import open_store
    from dashboard.auth.models import AuthPolicy

    store = open_store(data_dir, AuthPolicy())
    try:
        for row in store.list_users():
            state = "disabled" if row.disabled else "enabled"
            typer.echo(f"{row.user.username}\t{row.user.role.label}\t{state}\t{row.user.display_name}")
    finally:
        store.close()


# ---------------------------------------------------------------- a child's data (export / erase)

data_app = typer.Typer(
    help="A child's data: export everything held about a child, or erase it from every store (docs/storage.md).",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
ChildOpt = Annotated[str, typer.Option("--child", help="The child's id (the kit's pseudonym, e.g. c03).")]
ByOpt = Annotated[
    str | None, typer.Option("--by", help="Who asks (logged with the request; default: your login name).")
]
GatewayKitOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The gateway's kit file (bindings, time zone, InfluxDB settings).")
]


def _by(by: str | None) -> str:
    import getpass

    return by or getpass.getuser()


def _progress() -> Callable[[str, int, int], None]:
    """One line on standard error, rewritten at most every 0.5 s (long exports and erases)."""
    import time

    last = [0.0]

    def show(what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or done >= total:
            last[0] = now
            typer.echo(f"\r{what}: {done}/{total}", err=True, nl=done >= total)

    return show


def _child_plan(config: Path, db: Path, child: str) -> Plan:
    from gateway.child_data.jobs import JobError, plan
    from gateway.child_data.selection import check_child_id

    kit = _kit(config)
    try:
        return plan(kit, db, check_child_id(child))
    except JobError as exc:
        fail(str(exc))


@data_app.command("export")
def data_export(
    child: ChildOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the files into (created).")],
    config: GatewayKitOpt = Path("configs/kit.example.yaml"),
    db: DbOpt = Path("run/nurserywatch.sqlite3"),
    fmt: Annotated[str, typer.Option("--format", help="json, csv or both.")] = "both",
    by: ByOpt = None,
) -> None:
    """Write everything held about one child — readings, alerts and their transitions, nap-check
    records, InfluxDB points — as JSON and/or CSV files with a manifest. Logged in the database."""
    import time

    from gateway.child_data.jobs import JobError, export

    if fmt not in ("json", "csv", "both"):
        fail(f"--format must be json, csv or both (got {fmt!r})")
    p = _child_plan(config, db, child)
    try:
        res = export(p, out, cast("Format", fmt), int(time.time() * 1000), _by(by), _progress())
    except (*JobError, OSError) as exc:
        fail(str(exc))
    counts = ", ".join(f"{k} {v}" for k, v in res.counts.items())
    typer.echo(f"{out}: {len(res.files)} files about child {child} — {counts}")


@data_app.command("erase")
def data_erase(
    child: ChildOpt,
    config: GatewayKitOpt = Path("configs/kit.example.yaml"),
    db: DbOpt = Path("run/nurserywatch.sqlite3"),
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    by: ByOpt = None,
) -> None:
    """Remove one child's data from every store: readings, alerts, InfluxDB and its disk buffer;
    nap-check records keep a redacted entry, so `records verify` still passes. Exit 1 when a store
    could not be reached (run it again); 2 for an unknown child or when it must not run now."""
    import time

    from gateway.child_data.jobs import JobError, erase, erase_preview, refusals

    p = _child_plan(config, db, child)
    try:
        reasons = refusals(p)
        if reasons:
            fail("; ".join(reasons))
        if not yes:
            preview = ", ".join(f"{k} {v}" for k, v in erase_preview(p).items())
            typer.echo(f"erase all data about child {child} from {db}: {preview}")
            if not typer.confirm("This cannot be undone. Erase?", default=False):
                fail("nothing erased")
        request = erase(p, _by(by), int(time.time() * 1000), _progress())
    except JobError as exc:
        fail(str(exc))
    typer.echo(request.summary())
    if p.in_kit:
        typer.echo(
            f"note: child {child} is still in the kit {config}: remove them (and their devices' bindings), "
            "or the running gateway keeps storing new data about them",
            err=True,
        )
    if request.outcome != "done":
        fail(f"not everything was erased — run the command again once the store answers: {request.detail}", 1)


def main() -> None:  # pragma: no cover - console entry point convenience
    sys.exit(app())
