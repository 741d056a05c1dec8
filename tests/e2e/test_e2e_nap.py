"""A nap, end to end on real parts: the simulator plays two children on mats and clips over real
pseudo-terminals, the edge analyses the mat signal, the gateway (a separate process, real
Mosquitto) runs the rules and writes nap-check records. Staff start the session over MQTT (as the
dashboard does); one child stops breathing for 35 s. The apnea alert must come 20.0–21.0 s after the
last breath the edge saw, and the record sheet must hold a verified record per child after the first minute."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gateway.records.reader import RecordReader
from nurserywatch.cli.demo import redirect_serial_ports
from nurserywatch.contract import (
    Alert,
    AlertState,
    BreathingReading,
    SessionAction,
    SessionCommand,
    Stream,
    TopicKind,
    decode,
    parse_reading,
    parse_topic,
    session_command_topic,
    subscription,
)
from nurserywatch.kit import load_kit
from nurserywatch.mqtt import BrokerURL
from tests.support.commands import command_key_files, publish_command
from tests.support.processes import ROOT, print_logs, spawn, stop

pytestmark = pytest.mark.e2e

APNEA_AT_S, APNEA_END_S = 30, 65
SCENARIO = {
    "devices": {
        "clip-01": {"rate_hz": 10, "timeline": [{"at_s": 0, "posture": "supine"}]},
        "clip-02": {"rate_hz": 10, "timeline": [{"at_s": 0, "posture": "left"}]},
        "mat-01": {
            "timeline": [
                {"at_s": 0, "present": True, "rate_bpm": 30},
                {"at_s": APNEA_AT_S, "apnea": True},
                {"at_s": APNEA_END_S, "apnea": False},
            ]
        },
        "mat-02": {"timeline": [{"at_s": 0, "present": True, "rate_bpm": 28}]},
    }
}


async def test_a_nap_raises_apnea_on_time_and_writes_verified_records(mosquitto: BrokerURL, tmp_path: Path) -> None:
    kit = redirect_serial_ports(load_kit(ROOT / "configs/kit.demo.yaml"), tmp_path / "ttys")
    (tmp_path / "ttys").mkdir()
    kit_file, scenario, records_cfg, db = (tmp_path / n for n in ("kit.yaml", "nap.yaml", "records.yaml", "gw.db"))
    kit_file.write_text(yaml.safe_dump(kit.model_dump(mode="json"), allow_unicode=True))
    scenario.write_text(yaml.safe_dump(SCENARIO))
    records_cfg.write_text('interval_min: {"0": 1}\n')  # one record a minute keeps the test short
    common = ["--config", str(kit_file), "--log-level", "info"]
    procs, logs = {}, {}
    last_breath: dict[int, int] = {}  # reading ts → last_breath_ts reported for mat-01
    apnea: Alert | None = None
    try:
        async with mosquitto.client("e2e-nap-watcher") as client:
            await client.subscribe(subscription(kit.site, TopicKind.ALERT), qos=1)
            await client.subscribe(subscription(kit.site, TopicKind.READING), qos=1)
            for name, args in [
                ("gateway", ["gateway", *common, "--broker", str(mosquitto), "--db", str(db),
                             "--records", str(records_cfg), "--command-key", str(command_key_files(tmp_path)[1])]),
                ("edge", ["edge", *common, "--broker", str(mosquitto)]),
                ("sim", ["sim", *common, "--scenario", str(scenario)]),
            ]:
                procs[name], logs[name] = spawn(name, args, tmp_path)
            await asyncio.sleep(2)  # the gateway subscribes before the session command
            start = SessionCommand(room="hiyoko", action=SessionAction.START, by="e2e-staff")
            await publish_command(client, session_command_topic(kit.site), start)
            session_started = time.monotonic()

            async with asyncio.timeout(APNEA_AT_S + 40):
                async for message in client.messages:
                    topic = parse_topic(message.topic.value)
                    assert isinstance(message.payload, bytes)
                    if topic.kind is TopicKind.READING and topic.device == "mat-01":
                        assert topic.stream is Stream.BREATHING
                        reading = parse_reading(Stream.BREATHING, message.payload)
                        assert isinstance(reading, BreathingReading)
                        if reading.last_breath_ts is not None:
                            last_breath[reading.ts] = reading.last_breath_ts
                    elif topic.kind is TopicKind.ALERT and message.payload:
                        alert = decode(Alert, message.payload)
                        assert alert.rule != "apnea" or alert.device == "mat-01", "apnea on the breathing mat"
                        if alert.rule == "apnea" and alert.state is AlertState.ACTIVE:
                            apnea = alert
                            break
            assert apnea is not None
            # The alert is timed from the last breath the edge reported, to the second.
            reported = max(lb for ts, lb in last_breath.items() if ts <= apnea.updated_ts)
            assert apnea.started_ts == reported
            assert 20_000 <= apnea.updated_ts - apnea.started_ts <= 21_000
            assert apnea.severity.value == "critical" and apnea.child == "c001"

            # One one-minute interval (+ the records' 2 s grace): a record for each child.
            await asyncio.sleep(max(0.0, session_started + 65 - time.monotonic()))
    finally:
        for proc in procs.values():
            stop(proc)
        print_logs(logs)

    reader = RecordReader(db)
    assert reader.verify().ok
    records, _ = reader.records("hiyoko", 0, 2**62)
    by_child: dict[str, list[object]] = {}
    for e in records:
        by_child.setdefault(e.entry.child, []).append(e.entry)  # type: ignore[union-attr]
    assert set(by_child) == {"c001", "c002"}
    assert all(len(v) == 1 for v in by_child.values()), {k: len(v) for k, v in by_child.items()}
    c002 = by_child["c002"][0]
    assert c002.posture == "left" and c002.on_mat is True and c002.breathing_ok is True  # type: ignore[attr-defined]
    # The minute holding the apnea alert is not "breathing OK" for c001.
    assert by_child["c001"][0].breathing_ok is False  # type: ignore[attr-defined]
    out = subprocess.run([sys.executable, "-m", "nurserywatch", "records", "verify", "--db", str(db)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
