"""A cuttable TCP link on loopback: the WAN between a site and the fleet's centre in the tests and the
benchmark. ``TcpLink(target_port)`` listens on its own free port and forwards every connection to
``127.0.0.1:target_port``; ``cut()`` drops every connection and refuses new ones (accepted, then closed
at once, as an unreachable centre looks to a reconnecting server); ``restore()`` lets them through again.
Threads, so it works beside any event loop."""

from __future__ import annotations

import contextlib
import socket
import threading

from nurserywatch.ports import free_port


class TcpLink:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._thread = threading.Thread(target=self._accept, name=f"tcp-link-{self.port}", daemon=True)
        self._thread.start()
        #: Connections let through so far (a reconnect after restore() adds one).
        self.accepted = 0

    @property
    def is_cut(self) -> bool:
        return self._cut

    def url(self, scheme: str = "nats-leaf") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                refuse = self._cut or self._closed
            if refuse:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns |= {client, upstream}
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        for s in socks:
            with self._lock:
                self._conns.discard(s)
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        """Drop every connection; refuse new ones until restore()."""
        with self._lock:
            self._cut = True
            conns = list(self._conns)
        self._drop(*conns)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the thread
        self._listener.close()
        self._thread.join(timeout=5)
