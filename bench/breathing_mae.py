"""How close the edge's first-version breathing rate (edge/breathing.py) comes to the truth.

    .venv/bin/python bench/breathing_mae.py [--minutes 10] [--data ../shared/data/resp_belt]

1. Simulated mats (firmware_sim/mat.py) at 20–60/min, three seeds each, with a movement burst, an
   apnea and a gain change every few minutes: the truth is the scripted rate. Counted over the
   seconds where the truth has a rate (child present, not in an apnea).
2. The real chest-belt recordings replayed through a mat at ×2 (the 20 Hz belt treated as 40 Hz):
   the truth is the breath rate found on the clean belt over the same 20 s window
   (firmware_sim/resp_belt.py ``reference_breaths``).

For each: MAE in breaths/min over the seconds with a rate, the share of seconds with a rate
(``coverage``), and the share with an error over 5/min. The last line is the overall simulated MAE.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge.breathing import BreathingAnalyzer
from firmware_sim.mat import MatEvent, MatModel, MatStep
from firmware_sim.resp_belt import ReplayMat, ReplayOptions, load_recording

FS = 25
WINDOW_S = 20
REPO = Path(__file__).resolve().parents[1]


def evaluate(model: MatModel, seconds: int, truth: Callable[[float], float | None]) -> tuple[list[float], int]:
    """Absolute errors for the seconds with both a truth and a rate; and how many had a truth."""
    analyzer = BreathingAnalyzer(FS)
    errors: list[float] = []
    expected = 0
    for sec in range(seconds):
        analyzer.add(sec * 1000, model.samples(sec * FS, FS))
        f = analyzer.features()
        t = sec + 1.0
        ref = truth(t)
        if ref is None or sec < WINDOW_S:
            continue
        expected += 1
        if f is not None and f.rate_bpm is not None:
            errors.append(abs(f.rate_bpm - ref))
    return errors, expected


def synthetic(rate: float, seed: int, seconds: int) -> MatModel:
    steps: list[MatEvent] = [MatStep(at_s=0, present=True, rate_bpm=rate)]
    for start in range(120, seconds, 180):  # every 3 min: move, then an apnea, then a gain change
        steps += [
            MatStep(at_s=start, movement=True),
            MatStep(at_s=start + 5, movement=False),
            MatStep(at_s=start + 60, apnea=True),
            MatStep(at_s=start + 80, apnea=False),
            MatStep(at_s=start + 120, gain=0.8 if (start // 180) % 2 else 1.2),
        ]
    return MatModel(steps, seed=f"mae-{rate}-{seed}")


def synthetic_truth(model: MatModel, t: float) -> float | None:
    # The truth only counts once the window is clear of the last event (the rate is null meanwhile).
    rate = model.truth_rate_bpm(t)
    state_earlier = model.truth_rate_bpm(max(0.0, t - WINDOW_S))
    return rate if rate is not None and state_earlier is not None else None


def row(name: str, errors: list[float], expected: int) -> str:
    if not errors:
        return f"{name:28s}  no rate at all ({expected} s expected)"
    e = np.array(errors)
    return (
        f"{name:28s}  MAE {e.mean():5.2f}/min  coverage {len(e) / max(expected, 1):5.1%}  >5/min {np.mean(e > 5):5.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "resp_belt")
    args = parser.parse_args()
    seconds = int(args.minutes * 60)

    print(f"simulated mats, {args.minutes:g} min each, 3 seeds")
    all_sim: list[float] = []
    for rate in (20, 30, 40, 50, 60):
        errs: list[float] = []
        total = 0
        for seed in range(3):
            model = synthetic(rate, seed, seconds)
            e, n = evaluate(model, seconds, functools.partial(synthetic_truth, model))
            errs += e
            total += n
        all_sim += errs
        print("  " + row(f"{rate}/min", errs, total))

    files = sorted(args.data.glob("*.csv.gz"))
    print(f"\nresp_belt replays at x2, first {args.minutes:g} min of the night ({args.data})")
    if not files:
        print("  no recordings found")
    all_real: list[float] = []
    real_expected = 0
    for path in files:
        recording = load_recording(path)
        replay = ReplayMat([MatEvent(at_s=0, present=True)], ReplayOptions(replay=str(path)), recording, seed="mae")

        def belt(t: float, r: ReplayMat = replay) -> float | None:
            breaths = r.reference_breaths(t - WINDOW_S, t)
            return 60 * (len(breaths) - 1) / (breaths[-1] - breaths[0]) if len(breaths) >= 3 else None

        e, n = evaluate(replay, seconds, belt)
        all_real += e
        real_expected += n
        print("  " + row(path.name.split(".")[0], e, n))
    if all_real:
        print("  " + row("all recordings", all_real, real_expected))
    real = f"{np.mean(all_real):.2f}/min" if all_real else "n/a"
    print(f"\nbreathing_mae: simulated {np.mean(all_sim):.2f}/min, replayed belt {real}")


if __name__ == "__main__":
    main()
