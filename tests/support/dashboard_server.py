"""A real dashboard server on a free port for the dashboard tests, and the alerts, MQTT messages and
SSE events they exchange with it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from dashboard.app import serve_dashboard
from dashboard.auth.models import Role
from nurserywatch.command_auth import CommandSigner
from nurserywatch.contract import (
    AckCommand,
    Alert,
    AlertState,
    Severity,
    alert_topic,
)
from nurserywatch.kit import Kit
from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port
from tests.support.clock import T0
from tests.support.commands import COMMAND_KEY, opened
from tests.support.dashboard_login import FAST, add_accounts, login
from tests.support.kits import make_kit
from tests.support.waiting import wait_until


def dashboard_kit(site: str) -> Kit:
    """Two children in hiyoko (はると on clip-01, ゆい on clip-02) and a second, empty room."""
    return make_kit(
        site,
        name="ひまわり保育園",
        rooms={"hiyoko": "ひよこ組", "risu": "りす組"},
        children={"c001": {"age_band": "0", "nickname": "はると"}, "c002": {"age_band": "0", "nickname": "ゆい"}},
        devices={"clip-01": "c001", "clip-02": "c002"},
    )


def make_alert(alert_id: str = "a1", **changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "id": alert_id,
        "rule": "prone",
        "severity": Severity.CRITICAL,
        "state": AlertState.ACTIVE,
        "device": "clip-01",
        "room": "hiyoko",
        "child": "c001",
        "started_ts": T0,
        "updated_ts": T0,
        "value": "prone",
        "message": "うつぶせ寝が30秒続いています",
        "message_en": "Face down for 30 s",
    }
    fields.update(changes)
    return Alert.model_validate(fields)


@dataclass
class Dash:
    kit: Kit
    base: str
    http: httpx.AsyncClient
    mqtt: aiomqtt.Client
    data_dir: Path

    @property
    def site(self) -> str:
        return self.kit.site

    async def publish_alert(self, alert: Alert) -> None:
        await self.mqtt.publish(alert_topic(self.site, alert.id), alert.to_json(), qos=1, retain=alert.retained)

    async def clear_alert(self, alert_id: str) -> None:
        await self.mqtt.publish(alert_topic(self.site, alert_id), b"", qos=1, retain=True)

    async def alert_ids(self, state: str = "all") -> list[str]:
        r = await self.http.get("/api/alerts", params={"state": state})
        assert r.status_code == 200
        return [a["id"] for a in r.json()]


@contextlib.asynccontextmanager
async def running_dashboard(
    kit: Kit,
    broker: BrokerURL,
    mqtt_broker: BrokerURL | None = None,
    role: Role | None = Role.STAFF,
    command_key: CommandSigner = COMMAND_KEY,
) -> AsyncIterator[Dash]:
    """serve_dashboard on a free port (talking to ``broker``), an HTTP client, and a test MQTT client
    (on ``mqtt_broker``, default the same broker). Waits until the dashboard is subscribed. Its data
    folder holds one account per role (tests/support/dashboard_login.py); the client is signed in as ``role``
    (None: not signed in). ``command_key`` signs its commands (tests/support/commands.py)."""
    port = free_port()
    data = tempfile.TemporaryDirectory(prefix="nw-dash-")
    add_accounts(Path(data.name))
    task = asyncio.create_task(
        serve_dashboard(kit, broker, "127.0.0.1", port, data_dir=Path(data.name), auth_policy=FAST,
                        command_key=command_key)  # fmt: skip
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with (
            httpx.AsyncClient(base_url=base, timeout=5) as http,
            aiomqtt.Client(
                "127.0.0.1", (mqtt_broker or broker).port, identifier=f"test-{uuid.uuid4().hex[:8]}"
            ) as mqtt,
        ):

            async def healthy() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await http.get("/healthz")).status_code == 200
                return False

            await wait_until(healthy, "dashboard healthy", 10)
            if role is not None:
                await login(http, role)
            yield Dash(kit, base, http, mqtt, Path(data.name))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        data.cleanup()


async def next_message(client: aiomqtt.Client, timeout_s: float = 3.0) -> aiomqtt.Message:
    async def first() -> aiomqtt.Message:
        async for message in client.messages:
            return message
        raise AssertionError("subscription ended")

    return await asyncio.wait_for(first(), timeout_s)


def ack_of(message: aiomqtt.Message) -> AckCommand:
    """The acknowledgement the dashboard sent, its signature checked (tests/support/commands.py)."""
    assert isinstance(message.payload, bytes)
    return opened(AckCommand, message.topic.value, message.payload)


async def read_sse(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """(event name, decoded data) for each SSE event; comments and retry lines skipped."""
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield name, json.loads(data)
            name, data = "message", ""
        elif line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data += line[len("data: ") :]
