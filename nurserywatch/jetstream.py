"""The JetStream layout of a site on a NATS cluster (docs/deploy.md, "NATS cluster"): stream, consumer
and key-value bucket names, the subjects they hold, and their settings — plain data, no nats import,
so that ``nurserywatch kit provision`` (which writes them for operators) and the gateway (which
creates them if missing) read one definition.

MQTT and NATS meet in nats-server's MQTT listener: the contract's topic ``nurserywatch/v1/s/reading/d/x``
is the NATS subject ``nurserywatch.v1.s.reading.d.x`` (contract identifiers hold no ``.``, so the
mapping is one-to-one); ``+`` is ``*`` and a trailing ``#`` is ``>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nurserywatch.contract import TopicKind, check_ident, subscription

#: The contract topic kinds the gateway takes from JetStream (everything else it needs — retained alerts
#: and escalations to clear — it reads over MQTT where they are retained).
INPUT_KINDS = (
    TopicKind.READING,
    TopicKind.STATUS,
    TopicKind.EDGE,
    TopicKind.COMMAND_ACK,
    TopicKind.COMMAND_SESSION,
    TopicKind.COMMAND_RECORD,
    TopicKind.COMMAND_ASSIGN,
)

#: Copies of every stream and bucket: a 3-node cluster survives the loss of any one node.
REPLICAS = 3
#: nats-server's own stream of the MQTT QoS 1 messages it accepted (``mqtt { stream_replicas }``
#: copies), stored *before* it sends the PUBACK, created when the first MQTT client of the account
#: connects. The gateway consumes it directly: a stream of our own capturing the same subjects
#: is filled after the PUBACK, and lost what arrived while its leader was being elected (28 readings
#: over 7 s after kill -9 of its leader's node, measured). Interest retention: a message stays until
#: every consumer, the gateway's durable one included, has acknowledged it.
MQTT_STREAM = "$MQTT_msgs"
MQTT_SUBJECT_PREFIX = "$MQTT.msgs."
#: The lease: the active gateway renews it every LEASE_RENEW_S; a standby takes over once it has not been
#: renewed for LEASE_TTL_S (the key expires). Takeover ≤ TTL + a renew period + the start of the engine.
LEASE_TTL_S = 4.0
LEASE_RENEW_S = 1.0


def mqtt_filter_to_subject(topic_filter: str) -> str:
    """An MQTT topic or filter as the NATS subject (filter) nats-server maps it to."""
    parts = topic_filter.split("/")
    out = []
    for i, part in enumerate(parts):
        if part == "#":
            if i != len(parts) - 1:
                raise ValueError(f"{topic_filter!r}: '#' must be the last level")
            out.append(">")
        elif part == "+":
            out.append("*")
        elif not part or "." in part or "*" in part or ">" in part:
            raise ValueError(f"{topic_filter!r}: level {part!r} has no one-to-one NATS subject")
        else:
            out.append(part)
    return ".".join(out)


def subject_to_topic(subject: str) -> str:
    """A contract subject (or its copy in ``MQTT_STREAM``) back as its MQTT topic (the engine speaks topics)."""
    return subject.removeprefix(MQTT_SUBJECT_PREFIX).replace(".", "/")


@dataclass(frozen=True, slots=True)
class SiteLayout:
    """Names and settings of one site's JetStream objects."""

    site: str

    def __post_init__(self) -> None:
        check_ident(self.site, "site")

    @property
    def _tag(self) -> str:
        return self.site.replace("-", "_").upper()

    #: Where the gateway's input comes from (``MQTT_STREAM``: the server's, never provisioned).
    input_stream = MQTT_STREAM

    @property
    def input_subjects(self) -> list[str]:
        """The contract subjects of the site's input, as published over MQTT."""
        return [mqtt_filter_to_subject(subscription(self.site, kind)) for kind in INPUT_KINDS]

    @property
    def input_filters(self) -> list[str]:
        """The same subjects as ``MQTT_STREAM`` holds them."""
        return [MQTT_SUBJECT_PREFIX + subject for subject in self.input_subjects]

    @property
    def state_stream(self) -> str:
        """The gateway's journal: one message per committed transaction, appended by the active gateway
        only (``Nats-Expected-Last-Sequence`` fences a gateway that lost the lease)."""
        return f"NW_STATE_{self._tag}"

    @property
    def state_subject(self) -> str:
        return f"nwgw.{self.site}.state"

    @property
    def lease_bucket(self) -> str:
        return f"nw_lease_{self.site.replace('-', '_')}"

    lease_key = "active"

    @property
    def consumer(self) -> str:
        """The gateway's durable consumer of ``MQTT_STREAM`` (one stream for every site of the account)."""
        return f"gateway_{self._tag}_ackall"

    @property
    def legacy_consumer(self) -> str:
        """The consumer gateways before 2026-12 made, acknowledging each message: its ack policy cannot
        be changed in place, so the active gateway moves its position to ``consumer`` and deletes it
        (gateway/service/jetstream.py ``migrate_legacy_consumer``)."""
        return f"gateway_{self._tag}"

    def state_stream_config(self) -> dict[str, object]:
        return {
            "name": self.state_stream,
            "subjects": [self.state_subject],
            "retention": "limits",
            "storage": "file",
            "num_replicas": REPLICAS,
            "discard": "old",
        }

    def consumer_config(self, after_stream_seq: int = 0) -> dict[str, object]:
        """The gateway's durable pull consumer of the input stream (as the JetStream API's ConsumerConfig
        JSON): one acknowledgement per commit for everything up to its message (ack policy ``all``: one
        consumer handles the input in stream order, bench/README.md issue 17), a bounded number in
        flight (a backlog stays in the stream, not in the gateway's memory). It exists from the
        gateway's first start on, so the input is kept (interest) while every gateway is down.
        ``after_stream_seq``: deliver from the message after it (a legacy consumer's ack floor)."""
        start: dict[str, object] = {"deliver_policy": "all"}
        if after_stream_seq > 0:
            start = {"deliver_policy": "by_start_sequence", "opt_start_seq": after_stream_seq + 1}
        return {
            "durable_name": self.consumer,
            "filter_subjects": self.input_filters,
            "ack_policy": "all",
            **start,
            "ack_wait": int(30 * 1e9),
            "max_ack_pending": 1000,
            "max_deliver": -1,
        }


def delivery_sequences(reply: str) -> tuple[int, int]:
    """A JetStream message's stream sequence and the consumer's delivery sequence, from its reply
    subject (``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<delivery seq>.<ts>.<pending>``, or
    with ``<domain>.<account hash>.`` after ``ACK.`` and a token at the end). ValueError otherwise."""
    tokens = reply.split(".")
    if tokens[:2] != ["$JS", "ACK"] or not (len(tokens) == 9 or len(tokens) >= 11):
        raise ValueError(f"not a JetStream message's reply subject: {reply!r}")
    at = 5 if len(tokens) == 9 else 7
    return int(tokens[at]), int(tokens[at + 1])
