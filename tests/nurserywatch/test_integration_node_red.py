"""Node-RED (docs/integrations.md): the example flow configs/node-red/escalation-notify.json, run by a
real Node-RED (installed by scripts/bootstrap.sh --test into .cache/node-red) on a real Mosquitto,
turns escalations into HTTP POSTs to a local receiver standing in for the notification service.

The flow is used as it is (a copy): the broker and the URL come from the environment (``${NW_...}``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest

from nurserywatch.contract import Alert, AlertState, Severity, escalation_topic
from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port
from tests.support.clock import T0
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
FLOW = ROOT / "configs" / "node-red" / "escalation-notify.json"
RED_JS = ROOT / ".cache" / "node-red" / "node_modules" / "node-red" / "red.js"
SETTINGS = """module.exports = {
    uiHost: "127.0.0.1",
    uiPort: %d,
    flowFile: %s,
    credentialSecret: false,
    httpAdminRoot: false,  // no editor, no admin API: the flow only
    httpNodeRoot: false,
    diagnostics: {enabled: false},
    telemetry: {enabled: false, updateNotification: false},
    logging: {console: {level: "info", metrics: false, audit: false}},
};
"""


class Receiver(ThreadingHTTPServer):
    """The notification service: records each POST (path, headers, JSON body) and answers 204."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[tuple[str, dict[str, str], Any]] = []


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def node() -> str:
    found = shutil.which("node")
    if found is None or not RED_JS.exists():
        pytest.fail("Node-RED is not installed: run scripts/bootstrap.sh --test (npm ci into .cache/node-red)")
    return found


def escalation(alert_id: str, rule: str = "prone", **fields: Any) -> Alert:
    return Alert(id=alert_id, rule=rule, severity=Severity.CRITICAL, state=AlertState.ACTIVE, escalated=True,
                 device="clip-01", room="hiyoko", child="c001", started_ts=T0, updated_ts=T0 + 60_000,
                 value="prone", escalated_ts=T0 + 60_000, message=f"うつぶせ寝 ({alert_id})",
                 message_en=f"Prone sleeping ({alert_id})", **fields)  # fmt: skip


def publish(broker: BrokerURL, topic: str, payload: bytes) -> None:
    mqtt_publish.single(topic, payload, qos=1, retain=True, hostname=broker.host, port=broker.port)


def test_the_flow_posts_escalations_and_ignores_cleared_ones(
    mosquitto: BrokerURL, receiver: Receiver, tmp_path: Path
) -> None:
    node_bin = node()
    site = f"nr-{uuid.uuid4().hex[:8]}"
    first, second, cleared = escalation("prone-a1"), escalation("apnea-b2", rule="apnea"), "prone-c3"
    # retained before Node-RED starts (as a pager bridge finds it after a restart), and one cleared
    publish(mosquitto, escalation_topic(site, first.id), first.to_json())
    publish(mosquitto, escalation_topic(site, cleared), escalation(cleared).to_json())
    publish(mosquitto, escalation_topic(site, cleared), b"")
    other = f"nr-{uuid.uuid4().hex[:8]}"  # another site's on the same broker: the flow follows every site
    publish(mosquitto, escalation_topic(other, "prone-z9"), escalation("prone-z9").to_json())

    flow = tmp_path / FLOW.name  # a copy: Node-RED owns its flow file
    shutil.copy(FLOW, flow)
    (tmp_path / "settings.js").write_text(SETTINGS % (free_port(), json.dumps(str(flow))))
    env = {**os.environ, "NW_MQTT_HOST": mosquitto.host, "NW_MQTT_PORT": str(mosquitto.port),
           "NW_NOTIFY_URL": f"http://127.0.0.1:{receiver.server_port}/hooks/nurserywatch"}  # fmt: skip
    log = tmp_path / "node-red.log"

    def ours() -> list[tuple[str, dict[str, str], Any]]:
        # The flow follows every site's escalations, and the broker is shared with other tests
        # (retained escalations of their sites): only this site's posts are this test's.
        return [post for post in receiver.posts if post[2].get("site") == site]

    proc = subprocess.Popen(
        [node_bin, str(RED_JS), "--settings", str(tmp_path / "settings.js"), "--userDir", str(tmp_path)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: "Connected to broker" in log.read_text() or proc.poll() is not None, "Node-RED connected", 30)
        assert proc.poll() is None, log.read_text()
        wait_for(lambda: len(ours()) >= 1, "the retained escalation notified", 10)

        # live: an escalation cleared (acknowledged), one acknowledged in the payload, then a new one
        publish(mosquitto, escalation_topic(site, first.id), b"")
        acked = escalation("prone-d4", acknowledged=True, acknowledged_by="staff-1", acknowledged_ts=T0 + 61_000)
        publish(mosquitto, escalation_topic(site, acked.id), acked.to_json())
        publish(mosquitto, escalation_topic(site, second.id), second.to_json())
        wait_for(lambda: len(ours()) >= 2, "the live escalation notified", 10)
        time.sleep(0.5)  # anything more would be a notification too many
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    text = log.read_text()
    posts = ours()
    assert any(p[2]["site"] == other and p[2]["alert_id"] == "prone-z9" for p in receiver.posts)
    assert [p[2]["alert_id"] for p in posts] == [first.id, second.id], text
    path, headers, body = posts[0]
    assert path == "/hooks/nurserywatch" and headers["content-type"].startswith("application/json")
    assert body == {
        "title": f"nurserywatch [{site}]: prone alert escalated",
        "text": "Prone sleeping (prone-a1) (not acknowledged since 2026-01-01T00:00:00.000Z)",
        "text_ja": "うつぶせ寝 (prone-a1)",
        "site": site, "alert_id": first.id, "rule": "prone", "severity": "critical", "room": "hiyoko",
        "child": "c001", "device": "clip-01", "value": "prone", "started_ts": T0, "escalated_ts": T0 + 60_000,
    }  # fmt: skip
    assert posts[1][2]["rule"] == "apnea"
    assert "notification failed" not in text and "Error" not in text, text
    publish(mosquitto, escalation_topic(other, "prone-z9"), b"")
    for topic in (escalation_topic(site, a) for a in (second.id, acked.id)):
        publish(mosquitto, topic, b"")  # leave no retained message behind
