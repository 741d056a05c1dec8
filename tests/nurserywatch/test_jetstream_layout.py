"""The site's JetStream layout (nurserywatch/jetstream.py): pure data, checked against whole expected results."""

from __future__ import annotations

import pytest

from nurserywatch.jetstream import SiteLayout, delivery_sequences


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # nats-server's v1 form: $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<delivery seq>.<ts>.<pending>
        ("$JS.ACK.$MQTT_msgs.gateway_S_ackall.1.4711.12.1733600000000000000.3", (4711, 12)),
        ("$JS.ACK.$MQTT_msgs.gateway_S_ackall.3.9.1.1733600000000000000.0", (9, 1)),
        # v2: <domain>.<account hash> after ACK, a random token at the end (or not: 11 tokens)
        ("$JS.ACK.site-a.ACCHASH.$MQTT_msgs.gateway_S_ackall.1.88.7.1733600000000000000.0.rnd", (88, 7)),
        ("$JS.ACK._.ACCHASH.$MQTT_msgs.gateway_S_ackall.2.88.7.1733600000000000000.0", (88, 7)),
    ],
)
def test_delivery_sequences_from_the_reply_subject(reply: str, expected: tuple[int, int]) -> None:
    assert delivery_sequences(reply) == expected


@pytest.mark.parametrize(
    "reply",
    ["", "_INBOX.abc", "$JS.ACK.s.c.1.2.3.4", "$JS.ACK.s.c.1.2.3.4.5.6", "$JS.NAK.s.c.1.2.3.4.5",
     "$JS.ACK.s.c.1.x.3.4.5"],
)
def test_anything_else_is_refused_with_a_clear_error(reply: str) -> None:
    with pytest.raises(ValueError, match="reply subject|invalid literal"):
        delivery_sequences(reply)


def test_the_consumer_acknowledges_all_and_a_migrated_one_starts_after_the_legacy_floor() -> None:
    layout = SiteLayout("nursery-a")
    assert layout.consumer == "gateway_NURSERY_A_ackall" and layout.legacy_consumer == "gateway_NURSERY_A"
    fresh = layout.consumer_config()
    assert fresh["ack_policy"] == "all" and fresh["deliver_policy"] == "all" and "opt_start_seq" not in fresh
    moved = layout.consumer_config(after_stream_seq=41)
    assert {k: v for k, v in moved.items() if k not in ("deliver_policy", "opt_start_seq")} == \
        {k: v for k, v in fresh.items() if k != "deliver_policy"}  # fmt: skip
    assert moved["deliver_policy"] == "by_start_sequence" and moved["opt_start_seq"] == 42
