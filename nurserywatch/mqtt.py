"""Thin MQTT plumbing shared by edge, gateway and dashboard: broker URLs and a reconnecting session.

Deliberately small: the contract (topics, payloads) lives in contract.py; this file only opens
aiomqtt connections and keeps them open.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, unquote, urlsplit

import aiomqtt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nurserywatch.cancellation import raise_if_cancel_was_swallowed
from nurserywatch.yaml_files import load_yaml_model

log = logging.getLogger(__name__)


class CredentialsError(ValueError):
    """A credentials file that cannot be used; ``str()`` names the file and the problem."""


class MqttCredentials(BaseModel):
    """A credentials file (YAML, written by ``nurserywatch kit provision``): who this part is on the
    broker, and the TLS files. Relative paths are taken relative to the credentials file's folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: Annotated[str, Field(min_length=1)]
    password: Annotated[str, Field(min_length=1)]
    #: The site CA that signed the broker's certificate (used with mqtts:// only).
    ca_file: str | None = None
    #: A TLS client certificate and its key, for a broker that requires one (mqtts:// only).
    cert_file: str | None = None
    key_file: str | None = None
    #: The command key file (docs/contract.md, "Signed commands"): the dashboard's is the private key
    #: that signs staff commands, the gateway's its public key. Edge agents have none.
    command_key: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> MqttCredentials:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file, key_file: a client certificate needs both the certificate and its key")
        return self


def load_credentials(path: str | Path) -> MqttCredentials:
    """Read a credentials file; TLS file paths come back absolute and checked to exist."""
    path = Path(path)
    creds = load_yaml_model(path, MqttCredentials, CredentialsError, example="docs/deploy.md (Securing MQTT)")
    try:
        if path.stat().st_mode & 0o007:
            # Like ssh with a private key, but only a warning: refusing would stop a safety system.
            # Group-readable is fine: root:nurserywatch 0640 is how the service user reads it.
            log.warning("%s: holds a password but every local user can read it; chmod o-rwx it", path)
    except OSError:
        pass
    found: dict[str, str | None] = {}
    for key in ("ca_file", "cert_file", "key_file", "command_key"):
        value = getattr(creds, key)
        if value is None:
            found[key] = None
            continue
        file = path.parent / value
        if not file.is_file():
            raise CredentialsError(f"{path}: {key}: {file} is not a file")
        found[key] = str(file.resolve())
    return creds.model_copy(update=found)


#: Nagle off: an alert is one small write right after small PUBACKs; with Nagle on it waited for the
#: broker's delayed ACK (~40 ms on Linux) — measured by bench/alert_latency.py (bench/README.md).
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """``mqtt://[user:password@]host[:port]`` (1883) or ``mqtts://…`` (8883, TLS).

    Query options: ``?credentials=FILE`` reads user, password and TLS files from a credentials file
    (keeps the password out of the URL and the process list); ``?ca=FILE`` (mqtts only) trusts that CA."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    #: TLS: the CA certificate the broker's certificate must chain to (None: the system's trust store).
    ca_file: str | None = None
    #: TLS client certificate and key (None: none sent).
    cert_file: str | None = None
    key_file: str | None = None
    #: The command key named by ``?credentials=`` (not used to connect: the gateway and the dashboard
    #: read it, see MqttCredentials.command_key).
    command_key_file: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        """Parse a broker URL; every problem (including an unusable credentials file) is a ValueError."""
        base = cls._parse_base(url.split("?", 1)[0])
        query = urlsplit(url).query
        try:
            options = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise ValueError(f"broker URL {url!r}: the options after ? must be key=value pairs joined by &") from None
        unknown = sorted(set(options) - {"credentials", "ca"})
        if unknown:
            raise ValueError(f"broker URL {url!r}: unknown option {unknown[0]!r} (known: credentials, ca)")
        for key, values in options.items():
            if len(values) != 1 or not values[0]:
                raise ValueError(f"broker URL {url!r}: give ?{key}= once, with a file path")
        if "ca" in options:
            if not base.tls:
                raise ValueError(f"broker URL {url!r}: ?ca= is for TLS; use mqtts://")
            ca = Path(options["ca"][0])
            if not ca.is_file():
                raise ValueError(f"broker URL {url!r}: ?ca={ca}: no such file")
            base = replace(base, ca_file=str(ca.resolve()))
        if "credentials" in options:
            if base.username is not None:
                raise ValueError(f"broker URL {url!r}: give the user either in the URL or in ?credentials=, not both")
            creds = load_credentials(options["credentials"][0])
            base = replace(base, username=creds.username, password=creds.password, command_key_file=creds.command_key)
            if base.tls:
                # A plain mqtt:// URL ignores the TLS files: one credentials file serves both listeners.
                base = replace(
                    base,
                    ca_file=base.ca_file or creds.ca_file,
                    cert_file=creds.cert_file,
                    key_file=creds.key_file,
                )
        return base

    @classmethod
    def _parse_base(cls, url: str) -> BrokerURL:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL {url!r}: expected mqtt://host:port or mqtts://host:port")
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r}: no host name")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"broker URL {url!r}: the port must be a number 1–65535") from None
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def client(
        self,
        identifier: str,
        will: aiomqtt.Will | None = None,
        keepalive: int = 10,
        *,
        manual_ack: bool = False,
        clean_session: bool = False,
    ) -> aiomqtt.Client:
        """``manual_ack``: received QoS 1 messages are acknowledged (PUBACK) only by ``ack()``, once the
        receiver has made them durable; unacknowledged ones are sent again by the broker after a
        reconnect. Set here, before CONNECT: a persistent session gets its queued messages at once.
        ``clean_session``: for a client that only publishes (and resends what was not acknowledged
        itself): no session for the broker to keep."""
        # clean_session=False (the default): QoS 1 messages queued by the broker while we reconnect are delivered.
        client = aiomqtt.Client(
            hostname=self.host,
            port=self.port,
            identifier=identifier,
            username=self.username,
            password=self.password,
            will=will,
            keepalive=keepalive,
            clean_session=clean_session,
            tls_params=self.tls_params(),
            socket_options=NO_DELAY,
        )
        if manual_ack:
            client._client.manual_ack_set(True)  # aiomqtt 2.x has no option for it; paho's own switch
        return client

    def tls_params(self) -> aiomqtt.TLSParameters | None:
        """What aiomqtt needs for this URL's TLS (None for plain mqtt://); the server's certificate and
        host name are always verified."""
        if not self.tls:
            return None
        return aiomqtt.TLSParameters(ca_certs=self.ca_file, certfile=self.cert_file, keyfile=self.key_file)


#: One broker, or several tried in order (the nodes of a NATS cluster, docs/deploy.md "NATS cluster").
Brokers = BrokerURL | Sequence[BrokerURL]


def broker_list(brokers: Brokers) -> tuple[BrokerURL, ...]:
    urls = (brokers,) if isinstance(brokers, BrokerURL) else tuple(brokers)
    if not urls:
        raise ValueError("no broker URL given")
    return urls


def parse_brokers(text: str) -> tuple[BrokerURL, ...]:
    """Broker URLs separated by commas (``--broker``, ``$NURSERYWATCH_BROKER``), tried in that order; a
    comma inside a user name or password is written %2C. Every problem is a ValueError."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ValueError("no broker URL given: expected mqtt://host:port, or several separated by commas")
    if not all(items):
        raise ValueError(f"broker URLs {text!r}: an empty URL between commas")
    return tuple(BrokerURL.parse(item) for item in items)


def describe_brokers(brokers: Brokers) -> str:
    return ", ".join(str(url) for url in broker_list(brokers))


Session = Callable[[aiomqtt.Client], Awaitable[None]]

#: With several brokers, how long one may take to accept a connection before the next is tried. A NATS
#: node accepts a persistent session only once the session store's JetStream leader answers: after
#: a node's loss that leader is re-elected in 4–9 s (raft election timeout), and a CONNECT begun before
#: that never completes — retrying soon, on another node, reconnects within a few seconds of the
#: election instead of after aiomqtt's 10 s. A single broker keeps aiomqtt's timeout.
FAILOVER_CONNECT_TIMEOUT_S = 3.0


async def run_session(
    broker: Brokers,
    identifier: str,
    session: Session,
    *,
    will: aiomqtt.Will | None = None,
    max_backoff_s: float = 5.0,
    manual_ack: bool = False,
) -> None:
    """Connect, run ``session(client)``, and reconnect when the broker goes away. Returns when
    ``session`` returns; cancellation stops it. ``manual_ack``: see ``BrokerURL.client`` (the session
    then calls ``ack``).

    Several brokers (the nodes of one cluster): the first that accepts is used; a refused or lost
    connection moves on to the next at once, round-robin, and only once a whole round has failed does
    it wait the capped, jittered backoff — so losing one node costs a reconnect, not a backoff."""
    urls = broker_list(broker)
    backoff = 0.2
    i = 0
    failed = 0  # connections refused or lost since the last successful connect or backoff
    while True:
        url = urls[i]
        client = url.client(identifier, will=will, manual_ack=manual_ack)
        timeout = client.timeout
        if len(urls) > 1:
            client.timeout = FAILOVER_CONNECT_TIMEOUT_S
        try:
            async with client:
                raise_if_cancel_was_swallowed()  # by the connect's wait
                client.timeout = timeout  # the session's own requests keep aiomqtt's default
                log.info("connected to %s as %s", url, identifier)
                backoff, failed = 0.2, 0
                await session(client)
                return
        except aiomqtt.MqttError as exc:
            failed += 1
            i = (i + 1) % len(urls)
            if failed < len(urls):
                log.warning("MQTT connection to %s lost (%s); trying %s", url, exc, urls[i])
                continue
            log.warning("MQTT connection to %s lost (%s); retrying in %.1f s", url, exc, backoff)
        failed = 0
        await asyncio.sleep(backoff * (0.5 + random.random() / 2))
        backoff = min(backoff * 2, max_backoff_s)


def ack(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """Acknowledge a message received with ``manual_ack`` (PUBACK for QoS 1; nothing for QoS 0). ``mid``
    is only valid on the connection that delivered it: after a reconnect the broker sends it again."""
    client._client.ack(mid, qos)


async def publish(
    client: aiomqtt.Client,
    topic: str,
    payload: bytes,
    *,
    qos: int = 1,
    retain: bool = False,
    timeout: float | None = None,
) -> None:
    """``client.publish`` that cannot swallow a cancellation (see raise_if_cancel_was_swallowed)."""
    await client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)
    raise_if_cancel_was_swallowed()
