"""Telegraf (docs/integrations.md): configs/telegraf/nurserywatch-readings.conf against the contract and
the gateway's InfluxDB schema.

Telegraf itself cannot be installed here (not in Debian bookworm, not on PyPI or npm; building it
needs a newer Go toolchain than Debian's), so ``telegraf --test`` is not run. What is checked instead,
on the file: it is TOML; each mqtt_consumer's topics match the contract's reading topics of its stream
and no other (paho's own topic matcher); topic_parsing takes ``site`` and ``device`` from the right
levels and the stream as the measurement; each json_v2 field path exists in a full reading of the
contract's model, with the type and name the gateway's own line protocol writes for it, optional
exactly where the model allows null. Not checked: how Telegraf's gjson and json_v2 treat a JSON null
(``"rate_bpm": null``), and the plugin options' spelling beyond this file's own consistency.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import topic_matches_sub

from gateway.influx.line_protocol import MEASURED_STREAMS, reading_fields
from nurserywatch.contract import (
    AirReading,
    BodyTempReading,
    BreathingReading,
    Position,
    PostureReading,
    Reading,
    Stream,
    TopicKind,
    parse_topic,
    reading_topic,
    status_topic,
)  # fmt: skip

CONF = Path(__file__).resolve().parents[2] / "configs" / "telegraf" / "nurserywatch-readings.conf"
TS = 1_767_225_600_123
#: A reading with every field set, per measured stream.
FULL: dict[Stream, Reading] = {
    Stream.AIR: AirReading(ts=TS, seq=7, co2_ppm=812.0, pm25_ugm3=8.5, pm10_ugm3=12.0, temp_c=24.1, rh_pct=48.0),
    Stream.BREATHING: BreathingReading(ts=TS, seq=7, rate_bpm=32.0, amplitude=0.8, motion=0.1, present=True,
                                       quality=0.9, last_breath_ts=TS - 1500),
    Stream.POSTURE: PostureReading(ts=TS, seq=7, position=Position.SUPINE, accel_mg=(12, -30, -998)),
    Stream.BODY_TEMP: BodyTempReading(ts=TS, seq=7, celsius=36.6),
}  # fmt: skip
PY_TYPES = {"float": float, "int": int, "bool": bool, "string": str}


def consumers() -> list[dict[str, Any]]:
    with CONF.open("rb") as fh:
        conf = tomllib.load(fh)
    found: list[dict[str, Any]] = conf["inputs"]["mqtt_consumer"]
    return found


def stream_of(consumer: dict[str, Any]) -> Stream:
    (topic,) = consumer["topics"]
    return Stream(topic.rsplit("/", 1)[1])


def resolve(doc: Any, path: str) -> Any:
    """A dotted json_v2 (gjson) path of plain keys and array indexes: ``accel_mg.0``."""
    for part in path.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def test_one_consumer_per_measured_stream_on_the_contracts_topics() -> None:
    streams = [stream_of(c) for c in consumers()]
    assert sorted(streams) == sorted(MEASURED_STREAMS)  # waveforms stay out, as in the gateway
    for c in consumers():
        stream = stream_of(c)
        (sub,) = c["topics"]
        for other in Stream:
            assert topic_matches_sub(sub, reading_topic("hoikuen-1", "mat-01", other)) == (other == stream), sub
        assert not topic_matches_sub(sub, status_topic("hoikuen-1", "mat-01"))
        assert c["data_format"] == "json_v2" and c["qos"] == 1 and c["persistent_session"] is True
        assert c["servers"] == ["${NW_MQTT_URL}"]
    assert len({c["client_id"] for c in consumers()}) == len(consumers())  # one session each


@pytest.mark.parametrize("stream", sorted(MEASURED_STREAMS))
def test_topic_parsing_gives_site_device_and_the_gateways_measurement(stream: Stream) -> None:
    (c,) = [c for c in consumers() if stream_of(c) == stream]
    (parsing,) = c["topic_parsing"]
    topic = reading_topic("hoikuen-1", "mat-01", stream)
    assert topic_matches_sub(parsing["topic"], topic)
    levels = topic.split("/")
    tags = {name: levels[i] for i, name in enumerate(parsing["tags"].split("/")) if name != "_"}
    measurement = [levels[i] for i, name in enumerate(parsing["measurement"].split("/")) if name == "measurement"]
    parsed = parse_topic(topic)
    assert parsed.kind == TopicKind.READING
    assert tags == {"site": parsed.site, "device": parsed.device}
    assert measurement == [stream.value]  # the gateway's measurement: one per stream


@pytest.mark.parametrize("stream", sorted(MEASURED_STREAMS))
def test_json_fields_are_the_gateways_fields_of_a_real_payload(stream: Stream) -> None:
    (c,) = [c for c in consumers() if stream_of(c) == stream]
    (spec,) = c["json_v2"]
    reading = FULL[stream]
    payload = json.loads(reading.to_json())  # what the edge publishes
    assert (spec["timestamp_path"], spec["timestamp_format"]) == ("ts", "unix_ms")
    assert resolve(payload, spec["timestamp_path"]) == TS

    gateway = reading_fields(reading)  # what the gateway's own writer puts in InfluxDB
    ours: dict[str, Any] = {}
    model = type(reading).model_fields
    for field in spec["field"]:
        name = field.get("rename", field["path"])
        value = resolve(payload, field["path"])
        assert value is not None, field
        want = PY_TYPES[field["type"]]
        assert type(gateway[name]) is want, (name, gateway[name], field["type"])
        ours[name] = want(value)
        # optional exactly where the contract allows the field to be missing or null
        base = model[field["path"].split(".")[0]]
        assert field.get("optional", False) == (not base.is_required()), field
    assert ours == gateway
