"""Fuzz every decoder, channel and message handler with hypothesis, far past the test suite's sample.

    .venv/bin/python bench/fuzz.py [--inputs 100000] [--targets nmea,gateway,...] [--seed 1]

The targets, their hostile inputs and their properties are tests/support/fuzz_targets.py (the same ones
tests/test_fuzz_*.py run a fast sample of). The budget is split evenly between the targets; an
*input* is one call into the code under test — a chunk of serial bytes fed, a BLE payload decoded,
an MQTT message handled. A *crash* is any exception or broken property; the run goes on after one
and prints the first few with their input. Prints inputs, crashes and rejections by reason per
target, then the totals last (0 crashes expected).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ is not an installed package

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from nurserywatch.cli.progress import ProgressLine  # noqa: E402
from tests.support.fuzz_targets import TALLY, TARGETS, Target  # noqa: E402

#: Examples per hypothesis run; runs repeat (with the next seed) until the target's budget is spent.
BATCH = 250


def fuzz(target: Target, budget: int, first_seed: int, crashes: list[tuple[str, str, str]]) -> int:
    """Run ``target`` until it has had ``budget`` inputs; returns the number of crashes."""
    found = 0

    def guarded(example: Any) -> None:
        nonlocal found
        try:
            target.run(example)
        except Exception as exc:  # a crash or a broken property: count it, keep going
            found += 1
            if len(crashes) < 20:
                crashes.append((target.name, repr(example)[:400], "".join(traceback.format_exception(exc))[-1500:]))

    run_seed = first_seed
    started = time.perf_counter()
    progress = ProgressLine()  # in place on a terminal, plain lines in a log
    while TALLY.inputs[target.name] < budget:
        test = seed(run_seed)(
            settings(
                max_examples=BATCH,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )(given(target.strategy)(guarded))
        )
        test()
        run_seed += 1
        done = TALLY.inputs[target.name]
        rate = done / max(time.perf_counter() - started, 1e-9)
        progress.update(f"  {target.name:<22} {min(done, budget):>7}/{budget} inputs  {rate:>7.0f}/s  crashes {found}",
                        final=done >= budget)  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100_000, help="total inputs, split between targets")
    parser.add_argument("--targets", default="", help="comma-separated target names (default: all)")
    parser.add_argument("--seed", type=int, default=1, help="first hypothesis seed (runs are reproducible)")
    args = parser.parse_args()
    wanted = [t for t in args.targets.split(",") if t]
    unknown = set(wanted) - {t.name for t in TARGETS}
    if unknown:
        parser.error(f"unknown target(s) {sorted(unknown)}; known: {', '.join(t.name for t in TARGETS)}")
    targets = [t for t in TARGETS if not wanted or t.name in wanted]
    budget = -(-args.inputs // len(targets))
    print(f"fuzzing {len(targets)} targets, {budget} inputs each", file=sys.stderr)
    crashes: list[tuple[str, str, str]] = []
    found: Counter[str] = Counter()
    started = time.perf_counter()
    for target in targets:
        found[target.name] = fuzz(target, budget, args.seed, crashes)
    elapsed = time.perf_counter() - started

    for name, example, trace in crashes:
        print(f"\nCRASH in {name}, input {example}\n{trace}")
    print(f"\n{'target':<22} {'inputs':>8} {'accepted':>9} {'crashes':>8}  rejections by reason")
    reasons: Counter[str] = Counter()
    for target in targets:
        mine = {r: n for (t, r), n in TALLY.rejected.items() if t == target.name}
        reasons.update(mine)
        text = ", ".join(f"{r}={n}" for r, n in sorted(mine.items(), key=lambda x: -x[1]))
        print(f"{target.name:<22} {TALLY.inputs[target.name]:>8} {TALLY.accepted[target.name]:>9} "
              f"{found[target.name]:>8}  {text}")  # fmt: skip
    total = sum(TALLY.inputs[t.name] for t in targets)
    print(f"\nrejections by reason (all targets): {', '.join(f'{r}={n}' for r, n in reasons.most_common())}")
    print(f"fuzz: {total} inputs in {elapsed:.0f} s, {sum(found.values())} crashes, "
          f"{sum(reasons.values())} rejections counted under {len(reasons)} reasons")  # fmt: skip
    sys.exit(1 if sum(found.values()) else 0)


if __name__ == "__main__":
    main()
