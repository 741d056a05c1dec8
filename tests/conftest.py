"""Fixtures that start real services (Mosquitto) on free loopback ports."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port, wait_for_port
from tests.browser import browser

__all__ = ["browser", "free_port", "wait_for_port"]  # re-exported: tests import them / use the fixture


MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerURL]:
    """A real Mosquitto broker on a free loopback port, for the whole test session."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed; run `make test`, which installs it")
    port = free_port()
    d = tmp_path_factory.mktemp("mosquitto")
    conf = d / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"log_dest file {d / 'mosquitto.log'}\nlog_type error\nlog_type warning\nlog_type notice\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port)
        yield BrokerURL("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
