"""``nurserywatch fleet-provision``: the central NATS cluster's files from the fleet file's ``central``
section (docs/fleet.md, "Provisioning the centre"). The configs' text comes from
nurserywatch/fleet_nats.py; this writes them with the generated passwords, like the site's
``nurserywatch kit provision`` (nurserywatch/cli/provision_files.py): passwords in plain text in each
node's nats.conf (mode 0600), kept across runs (``--rotate`` replaces them all; delete one file to
replace that password only).

Layout of ``OUT``::

    nats/{node}/ nats.conf nurserywatch-fleet-nats-{node}.service        → each central node's machine
    credentials/fleet-worker.yaml   the fleet workers' user (the fleet file's nats.credentials)
    credentials/board.env           the fleet board's NURSERYWATCH_FLEET_NATS* (same user as the workers)
    credentials/system.yaml         the system account's user (nats-server's monitoring requests)
    credentials/sites/{site}.env    the site's password at the centre → to the site's operator, for its
                                    ``nurserywatch kit provision`` (the kit's nats.fleet.password_env)
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from fleet.config import CentralCluster, FleetConfig, SiteLink
from nurserywatch.cli.provision import ProvisionError
from nurserywatch.cli.provision_files import PUBLIC, SECRET, _write, stored_password
from nurserywatch.cli.provision_nats import NodeFiles, node_unit
from nurserywatch.fleet_nats import SYSTEM_USER, WORKER_USER, FleetSite, hub_accounts, hub_node_config, site_user
from nurserywatch.kit import NatsFleetLink

NATS_CONF = "nats.conf"
WORKER_CREDENTIALS = "fleet-worker.yaml"
SYSTEM_CREDENTIALS = "system.yaml"
BOARD_ENV = "board.env"
#: The variable a site's kit reads its password at the centre from, unless its kit names another.
SITE_PASSWORD_ENV: str = NatsFleetLink.model_fields["password_env"].default
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


@dataclass
class FleetProvisionResult:
    out: Path
    nodes: list[str] = field(default_factory=list)
    #: Users whose password this run made (all of them with --rotate), and those kept from an earlier run.
    new_passwords: list[str] = field(default_factory=list)
    kept_passwords: list[str] = field(default_factory=list)
    #: credentials/sites/*.env of sites the fleet file no longer has (their users are gone; files left).
    stale: list[Path] = field(default_factory=list)


def unit_name(node: str) -> str:
    return f"nurserywatch-fleet-nats-{node}.service"


def central_of(cfg: FleetConfig) -> CentralCluster:
    if cfg.central is None:
        raise ProvisionError("the fleet file has no central: section (the central cluster's three nodes; "
                             "docs/fleet.md, Provisioning the centre)")  # fmt: skip
    return cfg.central


def client_urls(central: CentralCluster) -> str:
    """The central nodes' NATS client URLs (the workers and the board connect there; no TLS)."""
    return ",".join(f"nats://{n.host}:{n.client_port}" for n in central.nodes)


def provision_fleet(cfg: FleetConfig, out: Path, *, rotate: bool = False) -> FleetProvisionResult:
    """Write every central node's config and unit, and the credentials; raises ProvisionError."""
    central = central_of(cfg)
    creds_dir, sites_dir = out / "credentials", out / "credentials" / "sites"
    try:
        for d, mode in ((out, 0o755), (out / "nats", 0o755), (creds_dir, 0o700), (sites_dir, 0o700)):
            d.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"{out}: cannot create the output folders: {exc.strerror or exc}") from None
    result = FleetProvisionResult(out=out)
    worker = _user_password(creds_dir / WORKER_CREDENTIALS, WORKER_USER, rotate, result)
    system = _user_password(creds_dir / SYSTEM_CREDENTIALS, SYSTEM_USER, rotate, result)
    sites = [
        FleetSite(s.id, _site_password(sites_dir / f"{s.id}.env", s.id, rotate, result), s.link is SiteLink.MQTT_BRIDGE)
        for s in cfg.sites
    ]
    try:
        accounts = hub_accounts(sites, worker, system)
    except ValueError as exc:
        raise ProvisionError(str(exc)) from None
    hub_nodes = [n.hub_node() for n in central.nodes]
    tls = central.tls.hub_tls() if central.tls else None
    for node, hub_node in zip(central.nodes, hub_nodes, strict=True):
        node_dir = out / "nats" / node.name
        files = NodeFiles(files_dir=central.files_dir or str(node_dir.resolve()),
                          store_dir=central.store_dir or str((node_dir / "jetstream").resolve()))  # fmt: skip
        files.check()
        conf = hub_node_config(hub_node, hub_nodes, files.store_dir, accounts, cluster_name=central.name, tls=tls,
                               bind=node.bind or "0.0.0.0")  # fmt: skip
        unit = node_unit(
            unit_name(node.name),
            f"Central NATS node {node.name!r} of the nurserywatch fleet, generated by `nurserywatch fleet-provision`.",
            "docs/fleet.md, Provisioning the centre",
            f"Central NATS node {node.name} of the nurserywatch fleet (leaf nodes, MQTT, JetStream domain hub)",
            files,
        )
        try:
            node_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise ProvisionError(f"{node_dir}: cannot create it: {exc.strerror or exc}") from None
        _write(node_dir / NATS_CONF, conf.encode(), SECRET)  # holds the passwords
        _write(node_dir / unit_name(node.name), unit.encode(), PUBLIC)
        result.nodes.append(node.name)
    _write(creds_dir / WORKER_CREDENTIALS, _credentials_yaml(WORKER_USER, worker, "the fleet workers' user at the "
           "centre: the fleet file's nats.credentials (`nurserywatch fleet`)").encode(), SECRET)  # fmt: skip
    _write(creds_dir / SYSTEM_CREDENTIALS, _credentials_yaml(SYSTEM_USER, system, "the central cluster's system "
           "account (server monitoring requests, e.g. `nats server report jetstream`)").encode(), SECRET)  # fmt: skip
    _write(creds_dir / BOARD_ENV, _board_env(central, worker).encode(), SECRET)
    for site in cfg.sites:
        password = next(s.password for s in sites if s.site == site.id)
        _write(sites_dir / f"{site.id}.env", _site_env(site.id, site.link, password).encode(), SECRET)
    known = {f"{s.id}.env" for s in cfg.sites}
    result.stale = sorted(p for p in sites_dir.glob("*.env") if p.name not in known)
    return result


def _new_password(user: str, result: FleetProvisionResult) -> str:
    result.new_passwords.append(user)
    return secrets.token_urlsafe(32)  # 256 bits; URL- and env-file-safe characters only


def _user_password(path: Path, user: str, rotate: bool, result: FleetProvisionResult) -> str:
    """The user's password from an earlier run's credentials file, else (or with --rotate) a new one."""
    kept = None if rotate else stored_password(path, user)
    if kept is None:
        return _new_password(user, result)
    result.kept_passwords.append(user)
    return kept


def _site_password(path: Path, site: str, rotate: bool, result: FleetProvisionResult) -> str:
    """The site's password from an earlier run's env file (whatever the variable's name), else a new one."""
    user = site_user(site)
    if rotate or not path.exists():
        return _new_password(user, result)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisionError(f"{path}: cannot read it ({exc}); delete it to give {site!r} a new password") from None
    values = [m.group(2).strip() for line in lines if (m := _ASSIGNMENT.match(line.strip()))]
    if len(values) != 1 or not values[0]:
        raise ProvisionError(f"{path}: want one line NAME=password; delete it to give site {site!r} a new password")
    result.kept_passwords.append(user)
    return values[0]


def _credentials_yaml(user: str, password: str, what: str) -> str:
    return "\n".join([
        f"# {what.capitalize()}; generated by `nurserywatch fleet-provision`. Secret: keep it mode 0600.",
        f"username: {json.dumps(user)}",
        f"password: {json.dumps(password)}",
    ]) + "\n"  # fmt: skip


def _board_env(central: CentralCluster, password: str) -> str:
    return "\n".join([
        "# The fleet board's connection to the central cluster (`nurserywatch dashboard` reads these; docs/fleet.md,",
        "# Fleet board), generated by `nurserywatch fleet-provision`. The board is the workers' user. Secret.",
        f"NURSERYWATCH_FLEET_NATS={client_urls(central)}",
        f"NURSERYWATCH_FLEET_NATS_USER={WORKER_USER}",
        f"NURSERYWATCH_FLEET_NATS_PASSWORD={password}",
    ]) + "\n"  # fmt: skip


def _site_env(site: str, link: SiteLink, password: str) -> str:
    if link is SiteLink.MQTT_BRIDGE:
        use = ["# fleet-provision`. Hand it to the site's operator over a safe channel: its Mosquitto bridge's",
               "# remote_password (docs/fleet.md, Mosquitto sites). Secret."]  # fmt: skip
    else:
        use = ["# fleet-provision`. Hand it to the site's operator over a safe channel: the site's `nurserywatch kit",
               f"# provision` reads it from the variable its kit's nats.fleet.password_env names ({SITE_PASSWORD_ENV}",
               "# by default; rename the variable here if the kit names another). Secret."]  # fmt: skip
    return "\n".join([
        f"# Site {site}'s password at the fleet's centre (user {site_user(site)}), generated by `nurserywatch",
        *use,
        f"{SITE_PASSWORD_ENV}={password}",
    ]) + "\n"  # fmt: skip
