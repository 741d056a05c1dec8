"""firmware_sim on REAL pseudo-terminals, read by the edge's serial shell (pyserial) and decoder."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from pathlib import Path

import pytest

from edge.decoders.nmea import ImuSample, NmeaDecoder
from edge.dsp.posture import classify_posture
from edge.io.serial_port import read_serial
from firmware_sim.encoders.nmea import encode_imu
from firmware_sim.io.pty_device import PortError, PtyDevice
from firmware_sim.io.runner import run_sim
from nurserywatch.contract import Position
from tests.support.kits import write_kit
from tests.support.scenarios import clip_scenario


class Reader:
    """The edge's serial shell + decoder on one port, recording arrival time of every frame."""

    def __init__(self, port: str) -> None:
        self.decoder = NmeaDecoder()
        self.samples: list[tuple[float, ImuSample]] = []
        self.states: list[bool] = []
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.create_task(
            read_serial(
                port, 115200, self._on_data, on_state=self.states.append, min_backoff_s=0.01, max_backoff_s=0.05
            )
        )

    def _on_data(self, data: bytes) -> None:
        now = self.loop.time()
        self.samples += [(now, f) for f in self.decoder.feed(data) if isinstance(f, ImuSample)]

    async def wait_state(self, count: int) -> None:
        async with asyncio.timeout(2):
            while len(self.states) < count:
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def test_posture_change_arrives_on_time(tmp_path: Path) -> None:
    kit = write_kit(tmp_path)
    port = kit.resolve_port("ports/clip-01")
    reader = Reader(port)
    t0 = reader.loop.time()
    await run_sim(kit, clip_scenario(50, (0, "supine"), (1.0, "prone")), duration_s=1.6)
    await reader.wait_state(2)  # the port disappeared when the sim stopped
    await reader.stop()

    assert reader.states == [True, False]
    assert not os.path.lexists(port), "the sim removes its symlink"
    assert reader.decoder.rejected == Counter()
    seqs = [s.seq for _, s in reader.samples]
    assert seqs[0] <= 10 and seqs[-1] >= 75 and seqs == list(range(seqs[0], seqs[-1] + 1)), "nothing lost"
    positions = [classify_posture(s.ax_mg, s.ay_mg, s.az_mg) for _, s in reader.samples]
    assert positions == [Position.SUPINE if s < 50 else Position.PRONE for s in seqs]
    # Real time: sample n arrives n/50 s after the start (no bursts, no drift) ...
    lateness = [t - t0 - s.seq / 50 for t, s in reader.samples]
    assert min(lateness) > -0.005 and max(lateness) < 0.2
    # ... so the turn to prone arrives 1 s after the start.
    first_prone = next(t for (t, _), p in zip(reader.samples, positions, strict=True) if p is Position.PRONE)
    assert 1.0 <= first_prone - t0 < 1.2


async def test_reader_reconnects_when_the_sim_comes_back(tmp_path: Path) -> None:
    kit = write_kit(tmp_path)
    reader = Reader(kit.resolve_port("ports/clip-01"))
    scenario = clip_scenario(50, (0, "upright"))
    await run_sim(kit, scenario, duration_s=0.3)
    await reader.wait_state(2)
    n_first = len(reader.samples)
    await run_sim(kit, scenario, duration_s=0.3)
    await reader.wait_state(4)
    await reader.stop()
    assert reader.states == [True, False, True, False]
    assert n_first >= 5 and len(reader.samples) - n_first >= 5
    assert reader.samples[n_first][1].seq <= 5, "the second run starts its own seq at 0"


async def test_fault_injection_is_counted_by_the_edge(tmp_path: Path) -> None:
    kit = write_kit(tmp_path)
    reader = Reader(kit.resolve_port("ports/clip-01"))
    scenario = clip_scenario(100, (0, "supine"), faults={"bad_checksum_every": 4, "garbage_every": 7})
    await run_sim(kit, scenario, duration_s=1.0)
    await reader.wait_state(2)
    await reader.stop()

    seqs = [s.seq for _, s in reader.samples]
    lo, hi = seqs[0], seqs[-1]
    assert hi - lo > 60
    assert seqs == [s for s in range(lo, hi + 1) if (s + 1) % 4], "exactly the corrupted ones are missing"
    bad = sum(1 for s in range(lo, hi + 1) if (s + 1) % 4 == 0)
    garbage = sum(1 for s in range(lo, hi) if (s + 1) % 7 == 0)
    rejected = reader.decoder.rejected
    # Sentences just before the first / after the last good one may or may not have been read.
    assert set(rejected) == {"bad_checksum", "garbage"}
    assert bad <= rejected["bad_checksum"] <= bad + 2
    assert garbage <= rejected["garbage"] <= garbage + 2


async def test_sim_survives_a_reader_that_stops_reading(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kit = write_kit(tmp_path)
    scenario = clip_scenario(1000, (0, "supine"))
    caplog.set_level(logging.INFO, logger="firmware_sim")

    async def open_and_stall() -> int:
        port = kit.resolve_port("ports/clip-01")
        while not os.path.exists(port):
            await asyncio.sleep(0.01)
        return os.open(port, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)  # and never read

    stall = asyncio.create_task(open_and_stall())
    await run_sim(kit, scenario, duration_s=1.5)  # ~37 kB into a ~20 kB kernel buffer
    os.close(await stall)
    assert "clip-01: the reader of" in caplog.text and "dropping output" in caplog.text
    assert "dropped (no reader keeping up)" in caplog.text and ", 0 dropped" not in caplog.text


def test_pty_device_counts_drops_and_cleans_up(tmp_path: Path) -> None:
    link = tmp_path / "dev" / "clip"
    sentence = encode_imu(1, 0, 0, 1000)
    with PtyDevice(link) as dev:
        assert os.readlink(link) == dev.slave_name
        fd = os.open(link, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        for _ in range(5000):
            dev.write(sentence)
        assert dev.dropped_bytes > 0 and dev.written_bytes > 0
        assert dev.written_bytes + dev.dropped_bytes == 5000 * len(sentence)
        os.close(fd)  # the reader is gone altogether
        dev.write(sentence)
    assert not os.path.lexists(link)


def test_pty_device_replaces_a_stale_symlink_but_not_a_file(tmp_path: Path) -> None:
    link = tmp_path / "clip"
    link.symlink_to("/dev/pts/does-not-exist")
    with PtyDevice(link) as dev:
        assert os.readlink(link) == dev.slave_name
    real = tmp_path / "real"
    real.write_text("keep me")
    with pytest.raises(PortError, match=r"real exists and is not a symlink; refusing to replace it"):
        PtyDevice(real)
    assert real.read_text() == "keep me"


def test_pty_device_explains_an_unusable_port(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # a file where the port's folder should be
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(PortError, match=r"cannot create the simulated port .*file/clip: File exists \(point the kit"):
        PtyDevice(tmp_path / "file" / "clip")
    assert len(os.listdir("/proc/self/fd")) == fds_before, "no pty leaked"
