"""What the gateway's timer costs: one ``RulesEngine.tick`` over every device of a large nursery × scale
(each device has reported; nothing is alerting — the common case), in-process, no I/O.

    .venv/bin/python bench/rules_tick.py [--scale 10] [--ticks 200] [--repeats 5] [--profile]

The gateway ticks every ``tick_ms`` (configs/rules.yaml: 200 ms): the share of one core the timer
takes is ms per tick × ticks per second / 1000. The best of ``--repeats`` runs is printed (the
others were slowed by something else on the machine). ``--profile`` prints cProfile's top entries.

The last line is the figure: ``rules_tick: <ms> ms per tick over <n> devices = <share> of a core``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import Nursery, air, breathing, posture  # noqa: E402
from gateway.config import load_rules  # noqa: E402
from gateway.engine.rules_engine import RulesEngine  # noqa: E402
from nurserywatch.contract import Stream, parse_reading  # noqa: E402
from nurserywatch.kit import load_kit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
T0_MS = 1_767_225_600_000


def engine(scale: int, d: Path) -> RulesEngine:
    """The engine of a nursery × ``scale`` whose every device reported for 5 s (once a second)."""
    n = Nursery(site="bench-tick", scale=scale)
    kit = load_kit(n.write_kit(d / "kit.yaml"))
    eng = RulesEngine(kit, load_rules(ROOT / "configs" / "rules.yaml"), T0_MS)
    for k in range(5):
        ts = T0_MS + k * 1000
        for devices, stream, payload in ((n.mats, Stream.BREATHING, breathing), (n.clips, Stream.POSTURE, posture),
                                         (n.air, Stream.AIR, air)):  # fmt: skip
            reading = parse_reading(stream, payload(k, ts))
            for dev in devices:
                eng.reading(dev, stream, reading, ts)
    return eng


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nw-tick-") as tmp:
        eng = engine(args.scale, Path(tmp))
    devices = len(eng.kit.devices)
    now = T0_MS + 4_200  # within every stream's freshness: every device's rules are judged
    tick_ms = eng.rules.tick_ms
    runs = []
    for r in range(args.repeats):
        start = time.process_time()
        for i in range(args.ticks):
            out = eng.tick(now + i)
            if out.transitions:
                raise SystemExit(f"tick {i} of run {r} changed an alert: {out.transitions[0]} (the bench wants none)")
        runs.append((time.process_time() - start) / args.ticks * 1000)
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(lambda: [eng.tick(now + i) for i in range(args.ticks)])
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    best = min(runs)
    share = best * (1000 / tick_ms) / 1000
    print("runs (ms per tick): " + ", ".join(f"{r:.2f}" for r in runs))
    print(f"rules_tick: {best:.2f} ms per tick over {devices} devices = {share:.3f} of a core "
          f"at {1000 / tick_ms:g} ticks/s (x{args.scale})")  # fmt: skip


if __name__ == "__main__":
    main()
