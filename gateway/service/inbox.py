"""The gateway's receive path on one aiomqtt connection: paho's socket read, buffered and bounded.

aiomqtt's own path costs more per message than the gateway's judging did (bench/README.md, issue 17):
its socket callback reads one MQTT packet per event-loop wake-up, paho reads every packet with three or
more ``recv`` calls (the command byte, each length byte, the body), aiomqtt converts each message into
its own ``Message`` (with a ``Topic`` it validates) and hands it through an ``asyncio.Queue`` to an
iterator that creates a task per message. And its queue is unbounded: Mosquitto 2.0.11 sends a
persistent session's whole backlog at once on reconnect, whatever its in-flight window, so 100 000
queued readings landed in the gateway's memory (~100 MB).

``Inbox`` takes over the connection's socket reader once aiomqtt has connected:

* the socket is read 64 KiB at a time (``_recv`` below stands in for paho's ``_sock_recv``), and each
  wake-up reads packets until the socket would block;
* paho's parsed message goes into a plain deque as ``Received`` (no aiomqtt ``Message``);
* **bounded** (from ``bound()`` on): once ``high`` messages wait, the socket is no longer read (its
  reader is removed) until the consumer has taken them down to ``low``. Mosquitto then waits on TCP
  flow control, the backlog stays at the broker — memory holds at most ``high`` messages plus one read
  buffer. Not before ``bound()``: the gateway subscribes first, and its SUBACK may come after messages
  the broker sends right after CONNACK (a reconnecting session's redelivery); with the reader paused
  it would never be read. Those are few unless the broker redelivers many: Mosquitto sends a
  persistent session's queue only within its in-flight window until the client's first PUBACK.

Everything else stays aiomqtt's and paho's: publishing, acknowledging (paho's manual ack), keep-alive,
the disconnect future. The consumer must not wait for a PUBACK while it is the one that would drain the
inbox (the PUBACK may sit behind readings in the socket): the MQTT shell publishes from its own task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple

import aiomqtt
import paho.mqtt.client as paho

#: Messages waiting before the socket is no longer read, and the level at which it is read again.
INBOX_HIGH = 2000
INBOX_LOW = 500
#: Bytes asked of the socket per read.
READ_SIZE = 65536


class Received(NamedTuple):
    topic: str
    payload: bytes
    retain: bool
    mid: int
    qos: int


class Inbox:
    """The messages of one connected ``aiomqtt.Client``, read in bulk and bounded (see the module)."""

    def __init__(self, client: aiomqtt.Client, high: int = INBOX_HIGH, low: int = INBOX_LOW) -> None:
        if not 0 <= low < high:
            raise ValueError(f"inbox bounds: need 0 <= low < high, got {low}, {high}")
        self._client = client
        self._paho: paho.Client = client._client
        self._loop = asyncio.get_running_loop()
        self.high, self.low = high, low
        self._messages: deque[Received] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._closed = False
        self._bounded = False
        #: The most messages that waited at once (tests, the bench).
        self.peak = 0
        #: How often the socket reader was paused for a full inbox.
        self.pauses = 0
        self._buf = b""
        self._pos = 0
        self._would_block = False
        sock = self._paho.socket()
        if sock is None:
            raise aiomqtt.MqttError("not connected")
        self._fd = sock.fileno()
        self._raw_recv = self._paho._sock_recv
        self._paho._sock_recv = self._recv  # type: ignore[method-assign]
        self._paho._handle_on_message = self._on_message  # type: ignore[method-assign]
        # What aiomqtt's callback already queued (a persistent session's first messages) comes first.
        queue = client._queue
        while not queue.empty():
            m = queue.get_nowait()
            self._put(Received(m.topic.value, _payload_bytes(m.payload), m.retain, m.mid, m.qos))
        self._loop.remove_reader(self._fd)
        self._loop.add_reader(self._fd, self._on_readable)

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def paused(self) -> bool:
        return self._paused

    def bound(self) -> None:
        """From now on, stop reading the socket while ``high`` messages wait (see the module)."""
        self._bounded = True
        if len(self._messages) >= self.high and not self._paused:
            self._pause()

    def take(self) -> Received | None:
        """The oldest message, None when none waits; reading resumes once ``low`` or fewer wait."""
        try:
            m = self._messages.popleft()
        except IndexError:
            return None
        if self._paused and len(self._messages) <= self.low:
            self._resume()
        return m

    async def wait(self) -> None:
        """Until a message waits; raises aiomqtt.MqttError once the connection is lost."""
        disconnected = self._client._disconnected
        while not self._messages:
            if disconnected.done():
                raise aiomqtt.MqttError("Disconnected during message iteration") from disconnected.exception()
            if self._paused:  # nothing left to take: read again
                self._resume()
            self._waiter = self._loop.create_future()
            try:
                await asyncio.wait((self._waiter, disconnected), return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._waiter = None

    def close(self) -> None:
        """Stop reading for this inbox (the session ended); aiomqtt removes the socket's reader itself."""
        self._closed = True

    # ------------------------------------------------------------ paho's side (the event loop's reader)

    def _recv(self, bufsize: int) -> bytes:
        """paho's ``_sock_recv``, served from a buffer filled ``READ_SIZE`` at a time."""
        if self._pos >= len(self._buf):
            try:
                data = self._raw_recv(READ_SIZE)
            except BlockingIOError:
                self._would_block = True
                raise
            if not data:
                return data  # closed by the broker
            self._buf, self._pos = data, 0
        end = self._pos + bufsize
        out = self._buf[self._pos : end]
        self._pos = min(end, len(self._buf))
        return out

    def _on_readable(self) -> None:
        try:
            while not self._paused:
                self._would_block = False
                rc = self._paho.loop_read()
                if rc != paho.MQTT_ERR_SUCCESS or self._would_block:
                    return  # paho reported a lost connection itself (aiomqtt's on_disconnect)
        except Exception as exc:  # like aiomqtt's reader: a broken socket ends the connection
            if not self._client._disconnected.done():
                self._client._disconnected.set_exception(exc)

    def _on_message(self, message: paho.MQTTMessage) -> None:
        topic = message._topic.decode("utf-8", "replace")  # an invalid one is refused as bad_topic
        self._put(Received(topic, bytes(message.payload), bool(message.retain), message.mid, message.qos))

    def _put(self, m: Received) -> None:
        self._messages.append(m)
        n = len(self._messages)
        if n > self.peak:
            self.peak = n
        if n >= self.high and self._bounded and not self._paused:
            self._pause()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pause(self) -> None:
        self._paused = True
        self.pauses += 1
        self._loop.remove_reader(self._fd)

    def _resume(self) -> None:
        self._paused = False
        if self._closed or self._paho.socket() is None or self._client._disconnected.done():
            return
        self._loop.add_reader(self._fd, self._on_readable)
        if self._pos < len(self._buf):  # bytes already read wake no selector: parse them now
            self._loop.call_soon(self._on_readable)


def _payload_bytes(payload: bytes | bytearray | str | int | float | None) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()
