"""The I/O of ``nurserywatch kit provision``: generate the site CA, the broker's certificate and the
passwords, write every file with the right mode, and hash the password file with Mosquitto's own
``mosquitto_passwd``. The text of each file comes from nurserywatch/cli/provision.py.

Re-running into the same folder keeps what exists (the CA, every user's password, client
certificates) and only adds what the kit now needs, so deployed agents keep working; the server
certificate is issued anew each time (host names may have changed). Delete a file to replace it.

Layout of ``OUT``::

    mosquitto/   nurserywatch.conf passwd acl ca.crt server.crt server.key   → the broker's machine
    nats/{node}/ nats.conf ca.crt server.crt server.key nurserywatch-nats-{node}.service
                 → each node's machine, instead of mosquitto/ when the kit names a NATS cluster
    nats/streams/ the site's stream and consumer definitions (JSON)
    credentials/{user}.env (NATS cluster) the part's NURSERYWATCH_BROKER: every node, in its order
    credentials/ {user}.yaml ca.crt [{user}.crt {user}.key]                 → one .yaml (+ ca.crt) per machine
                 command-key.pem (with dashboard.yaml) command-key.pub (with gateway.yaml)
    ca/          ca.key ca.crt                                              → keep offline; issues certificates
    credentials/records-signing.key (+ .pub)   → the gateway's machine: signs the records' day heads
    records-signing.pub                        → for whoever audits the records (docs/records.md)
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.records.signing import KEY_FILE as RECORDS_KEY_FILE
from nurserywatch.cli import provision_nats
from nurserywatch.cli.provision import (
    ACL_FILE,
    CA_CERT,
    COMMAND_KEY,
    CONF_FILE,
    PASSWORD_FILE,
    SERVER_CERT,
    SERVER_KEY,
    BrokerOptions,
    MqttUser,
    ProvisionError,
    Role,
    ServerNames,
    acl_text,
    credentials_yaml,
    mosquitto_conf,
    mqtt_users,
    password_lines,
    server_names,
)
from nurserywatch.keys import (
    KeyFileError,
    load_or_create_private_key,
    public_key_path,
    write_new_file,
    write_public_key,
)
from nurserywatch.kit import Kit
from nurserywatch.mqtt import CredentialsError, load_credentials

CA_DAYS = 10 * 365
#: Server and client certificates: 825 days, the longest many TLS clients accept from any CA.
CERT_DAYS = 825
SECRET = 0o600
PUBLIC = 0o644


@dataclass(frozen=True, slots=True)
class ProvisionOptions:
    hostnames: tuple[str, ...] = ()
    bind: str = "127.0.0.1"
    port: int = 1883
    tls_bind: str | None = None
    tls_port: int = 8883
    #: The folder of the mosquitto/ files on the broker's machine (None: OUT/mosquitto, absolute).
    broker_dir: str | None = None
    client_certs: bool = False
    #: NATS cluster: the credentials files' folder on the parts' machines (their broker URLs name it).
    credentials_dir: str = provision_nats.CREDENTIALS_DIR
    #: NATS cluster: each node's JetStream store on its machine (None: nats/{node}/jetstream under OUT,
    #: or /var/lib/nats/jetstream with --broker-dir).
    nats_store_dir: str | None = None


@dataclass
class ProvisionResult:
    out: Path
    users: list[str]
    new_passwords: list[str] = field(default_factory=list)
    ca_created: bool = False
    command_key_created: bool = False
    names: ServerNames | None = None
    server_cert_expires: dt.datetime | None = None
    #: credentials/*.yaml of users the kit no longer has (their access is gone; the files are left).
    stale: list[Path] = field(default_factory=list)
    #: The records' site key (credentials/records-signing.key) was made by this run (else kept).
    records_key_created: bool = False
    #: The NATS nodes whose files were written (empty: Mosquitto).
    nats_nodes: list[str] = field(default_factory=list)


def find_mosquitto_passwd() -> str:
    found = shutil.which("mosquitto_passwd")
    if found is None:
        raise ProvisionError(
            "mosquitto_passwd not found on PATH: it hashes the broker's password file. Install Mosquitto "
            "(Debian / Raspberry Pi OS: sudo apt install mosquitto) and run this again"
        )
    return found


def provision(kit: Kit, out: Path, opts: ProvisionOptions, now: dt.datetime) -> ProvisionResult:
    """Write every file of the site's MQTT security into ``out``; raises ProvisionError. A kit that
    names a NATS cluster gets nats/ (each node's config) instead of mosquitto/."""
    nats = kit.nats is not None
    passwd_tool = None if nats else find_mosquitto_passwd()  # before anything is written
    broker_dir = opts.broker_dir or str((out / "mosquitto").resolve())
    broker = BrokerOptions(
        files_dir=broker_dir,
        bind=opts.bind,
        port=opts.port,
        tls_bind=opts.tls_bind,
        tls_port=opts.tls_port,
        require_client_cert=opts.client_certs,
    )
    conf = "" if nats else mosquitto_conf(kit, broker)  # checks the options
    names = server_names(opts.hostnames)
    mosq, creds_dir, ca_dir = out / "mosquitto", out / "credentials", out / "ca"
    try:
        for d, mode in ((out, 0o755), (creds_dir, 0o700), (ca_dir, 0o700), *(() if nats else ((mosq, 0o755),))):
            d.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"{out}: cannot create the output folders: {exc.strerror or exc}") from None

    users = mqtt_users(kit)
    result = ProvisionResult(out=out, users=[u.name for u in users], names=names)
    ca_key, ca_cert, result.ca_created = _site_ca(kit, ca_dir, now)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)

    passwords: dict[str, str] = {}
    for user in users:
        passwords[user.name] = _password(creds_dir / f"{user.name}.yaml", result, user.name)
    # The dashboard signs staff commands, the gateway checks them: kept across runs like the passwords.
    public = public_key_path(creds_dir / COMMAND_KEY).name
    try:
        _, result.command_key_created = load_or_create_private_key(creds_dir / COMMAND_KEY)
    except KeyFileError as exc:
        raise ProvisionError(f"{exc} — delete {COMMAND_KEY} and {public} to make a new pair") from None
    command_keys = {Role.DASHBOARD: COMMAND_KEY, Role.GATEWAY: public}
    for user in users:
        cert_file = key_file = None
        if opts.client_certs:
            cert_file, key_file = _client_cert(ca_key, ca_cert, creds_dir, user, now)
        text = credentials_yaml(kit, user, passwords[user.name], ca_file=CA_CERT, cert_file=cert_file,
                                key_file=key_file, command_key=command_keys.get(user.role))
        _write(creds_dir / f"{user.name}.yaml", text.encode(), SECRET)
    _write(creds_dir / CA_CERT, ca_pem, PUBLIC)

    if nats:
        _nats_files(kit, out, opts, now, ca_key, ca_cert, passwords, result)
    else:
        _mosquitto_files(kit, mosq, conf, names, now, ca_key, ca_cert, passwd_tool, passwords, result)
    _records_key(out, creds_dir, result)
    known = {f"{u.name}.yaml" for u in users}
    result.stale = sorted(p for p in creds_dir.glob("*.yaml") if p.name not in known)
    return result


def _mosquitto_files(
    kit: Kit,
    mosq: Path,
    conf: str,
    names: ServerNames,
    now: dt.datetime,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    passwd_tool: str | None,
    passwords: dict[str, str],
    result: ProvisionResult,
) -> None:
    assert passwd_tool is not None
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue(ca_key, ca_cert, server_key.public_key(), f"nurserywatch broker {kit.site}", now,
                         server=names)
    result.server_cert_expires = server_cert.not_valid_after_utc
    _write(mosq / CONF_FILE, conf.encode(), PUBLIC)
    _write(mosq / ACL_FILE, acl_text(kit).encode(), PUBLIC)
    _write(mosq / CA_CERT, ca_pem, PUBLIC)
    _write(mosq / SERVER_CERT, server_cert.public_bytes(serialization.Encoding.PEM), PUBLIC)
    _write(mosq / SERVER_KEY, _key_pem(server_key), SECRET)
    _hashed_password_file(passwd_tool, mosq / PASSWORD_FILE, password_lines(passwords))


def _nats_files(
    kit: Kit,
    out: Path,
    opts: ProvisionOptions,
    now: dt.datetime,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    passwords: dict[str, str],
    result: ProvisionResult,
) -> None:
    """Each node's folder (config with the users' passwords, certificate, systemd unit), the streams'
    definitions, and each part's broker URLs."""
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    cluster = provision_nats.cluster_of(kit)
    nats_dir = out / "nats"
    for node in cluster.nodes:
        node_dir = nats_dir / node.name
        files = provision_nats.NodeFiles(
            files_dir=opts.broker_dir or str(node_dir.resolve()),
            store_dir=opts.nats_store_dir
            or ("/var/lib/nats/jetstream" if opts.broker_dir else str((node_dir / "jetstream").resolve())),
            require_client_cert=opts.client_certs,
        )
        conf = provision_nats.nats_conf(kit, node, files, passwords, _fleet_password(kit))  # checks the hosts
        try:
            node_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise ProvisionError(f"{node_dir}: cannot create it: {exc.strerror or exc}") from None
        # Each node's certificate: its own host (the routes check it) and the --hostname names; also a
        # client certificate, which it shows the other nodes on the routes.
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(ca_key, ca_cert, key.public_key(), f"nurserywatch NATS {kit.site} {node.name}", now,
                      server=server_names([node.host, *opts.hostnames]), also_client=True)  # fmt: skip
        result.server_cert_expires = cert.not_valid_after_utc
        _write(node_dir / provision_nats.NATS_CONF, conf.encode(), SECRET)  # holds the passwords
        _write(node_dir / CA_CERT, ca_pem, PUBLIC)
        _write(node_dir / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM), PUBLIC)
        _write(node_dir / SERVER_KEY, _key_pem(key), SECRET)
        _write(node_dir / provision_nats.unit_name(kit, node), provision_nats.nats_unit(kit, node, files).encode(),
               PUBLIC)  # fmt: skip
        result.nats_nodes.append(node.name)
    result.names = server_names([*(n.host for n in cluster.nodes), *opts.hostnames])  # each node has its own
    streams = nats_dir / "streams"
    try:
        streams.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"{streams}: cannot create it: {exc.strerror or exc}") from None
    for name, text in provision_nats.stream_configs(kit).items():
        _write(streams / name, text.encode(), PUBLIC)
    for user in mqtt_users(kit):
        env = provision_nats.env_file(kit, user, opts.credentials_dir)
        _write(out / "credentials" / f"{user.name}.env", env.encode(), SECRET)


def _fleet_password(kit: Kit) -> str | None:
    """The site's password at the fleet's centre, from the environment variable its kit names."""
    fleet = provision_nats.cluster_of(kit).fleet
    return os.environ.get(fleet.password_env) if fleet is not None else None


def _records_key(out: Path, creds_dir: Path, result: ProvisionResult) -> None:
    """The records' site key: on the gateway's machine, never in its database (docs/records.md)."""
    try:
        records_key, result.records_key_created = load_or_create_private_key(creds_dir / RECORDS_KEY_FILE)
        write_public_key(out / public_key_path(Path(RECORDS_KEY_FILE)).name, records_key.public_key())
    except KeyFileError as exc:
        raise ProvisionError(str(exc)) from None


# ------------------------------------------------------------------ secrets and files


def _password(creds_file: Path, result: ProvisionResult, user: str) -> str:
    """The user's password from an earlier run, else a new random one (256 bits)."""
    kept = stored_password(creds_file, user)
    if kept is not None:
        return kept
    result.new_passwords.append(user)
    return secrets.token_urlsafe(32)


def stored_password(creds_file: Path, user: str) -> str | None:
    """The user's password in its credentials file from an earlier run; None: no file."""
    if not creds_file.exists():
        return None
    try:
        creds = load_credentials(creds_file)
    except CredentialsError as exc:
        raise ProvisionError(f"{exc} — delete the file to give {user!r} a new password") from None
    if creds.username != user:
        raise ProvisionError(f"{creds_file}: belongs to {creds.username!r}, not {user!r}; delete or move it")
    return creds.password


def _hashed_password_file(tool: str, target: Path, plain: str) -> None:
    """mosquitto_passwd -U hashes a user:password file in place; the plain text never outlives this."""
    tmp = target.with_name(f".{target.name}.plain")
    tmp.unlink(missing_ok=True)
    try:
        write_new_file(tmp, plain.encode(), SECRET)
        try:
            done = subprocess.run([tool, "-U", str(tmp)], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProvisionError(f"{tool} -U failed to run: {exc}") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
            raise ProvisionError(f"{tool} -U could not hash the password file: {detail}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` atomically; the new file has ``mode`` from its first byte (no window in which a
    secret is readable by others)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        write_new_file(tmp, data, mode)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ProvisionError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# ------------------------------------------------------------------ certificates (EC P-256)


def _site_ca(kit: Kit, ca_dir: Path, now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, bool]:
    key_file, cert_file = ca_dir / "ca.key", ca_dir / CA_CERT
    if key_file.exists() or cert_file.exists():
        try:
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise ProvisionError(
                f"{ca_dir}: the site CA from an earlier run cannot be read ({exc}); restore ca.key and ca.crt, "
                "or delete both to start a new CA (every agent then needs its new credentials folder)"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise ProvisionError(f"{ca_dir}: ca.key does not belong to ca.crt")
        if cert.not_valid_after_utc <= now + dt.timedelta(days=CERT_DAYS):
            raise ProvisionError(
                f"{cert_file}: the site CA expires {cert.not_valid_after_utc:%Y-%m-%d}, before a new certificate "
                "would; delete ca/ to start a new CA"
            )
        return key, cert, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nurserywatch"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"nurserywatch site CA {kit.site}"),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_file, _key_pem(key), SECRET)
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), PUBLIC)
    return key, cert, True


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    now: dt.datetime,
    *,
    server: ServerNames | None = None,
    also_client: bool = False,
) -> x509.Certificate:
    """A leaf certificate: a TLS server with ``server``'s names (``also_client``: and a TLS client, as
    a NATS node on its routes), else a TLS client."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate a Pi whose clock is a little behind
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server and also_client
                else [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server is not None:
        alt: list[x509.GeneralName] = [x509.DNSName(n) for n in server.dns]
        alt += [x509.IPAddress(ip) for ip in server.ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _client_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, creds_dir: Path, user: MqttUser, now: dt.datetime
) -> tuple[str, str]:
    """A client certificate (CN = the user) for the TLS listener's require_certificate; kept when it
    exists and was issued by this CA."""
    cert_file, key_file = creds_dir / f"{user.name}.crt", creds_dir / f"{user.name}.key"
    if cert_file.exists() and key_file.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            cert.verify_directly_issued_by(ca_cert)
            if cert.not_valid_after_utc > now + dt.timedelta(days=30):
                return cert_file.name, key_file.name
        except (ValueError, TypeError, InvalidSignature):
            pass  # unreadable, or from another CA: issue a new one
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(ca_key, ca_cert, key.public_key(), user.name, now)
    _write(key_file, _key_pem(key), SECRET)
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), PUBLIC)
    return cert_file.name, key_file.name
