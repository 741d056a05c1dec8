"""A private Mosquitto for the tests (the session fixture, the chaos and store-and-forward runs) and
the benchmarks (bench/stack.py): its own config, listening on 127.0.0.1 only, on a free port."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port, wait_for_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class MosquittoProcess:
    """Mosquitto on ``127.0.0.1:port``; its config and log in ``dir``.

    ``anonymous``: False needs a ``password_file`` line in ``options``. ``persistence``: sessions and
    their queued QoS 1 messages are saved in ``dir`` on a clean stop and read back by the next
    start(), as a production broker's are. ``max_queued_messages``: None keeps Mosquitto's default
    (1000), 0 is unbounded. ``options``: further config lines. stop() and start() again reuse the
    port and the config."""

    def __init__(
        self,
        d: Path,
        *,
        persistence: bool,
        anonymous: bool = True,
        max_queued_messages: int | None = None,
        log_types: Sequence[str] = (),
        options: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        self.conf = d / "mosquitto.conf"
        self.log = d / "mosquitto.log"
        # user root: when the tests run as root, do not switch to the mosquitto user, who could not read
        # pytest's 0700 tmp dir (a password file) or write the persistence file there.
        lines = ["user root", f"listener {self.port} 127.0.0.1", f"allow_anonymous {str(anonymous).lower()}"]
        if persistence:
            lines += ["persistence true", f"persistence_location {d}/"]
        else:
            lines.append("persistence false")
        if max_queued_messages is not None:
            lines.append(f"max_queued_messages {max_queued_messages}")
        lines += [*options, f"log_dest file {self.log}", *(f"log_type {t}" for t in log_types)]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> BrokerURL:
        return BrokerURL("127.0.0.1", self.port)

    def start(self, timeout_s: float = 10.0) -> None:
        """Start it and return once the port accepts connections."""
        if self.proc is not None:
            raise RuntimeError(f"mosquitto on port {self.port} is already running")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for_port(self.port, timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (like ``systemctl stop``): a clean stop, the session store is saved. SIGKILL only if
        it has not exited after ``timeout_s``, so that no broker outlives its test."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def running_provisioned(out: Path, main_dir: Path, log: Path, ports: Sequence[int]) -> Iterator[None]:
    """Mosquitto on ``kit provision``'s files in ``out``: the generated file included unchanged, as
    Debian's mosquitto.conf includes conf.d/ (``user root``: as root, Mosquitto would switch to its own
    user, who cannot read pytest's 0700 tmp dir). Until the block ends, once every port answers."""
    main = main_dir / "main.conf"
    main.write_text(f"user root\ninclude_dir {out / 'mosquitto'}\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(main)], stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        for port in ports:
            wait_for_port(port)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
