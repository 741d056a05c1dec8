"""Chaos with long outages: the run of tests/e2e/test_chaos.py (tests/support/chaos_stack.py) with InfluxDB
stopped for 5 minutes, Mosquitto for a minute, the gateway and the edge each down for 30 s and a
sensor unplugged for a minute, on real processes. Prints one line per promise and the figure last.

    .venv/bin/python bench/chaos.py                 # ~9 min
    .venv/bin/python bench/chaos.py --influx-s 60   # shorter
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.alert_changes import Change  # noqa: E402
from nurserywatch.contract import Severity  # noqa: E402
from tests.support.chaos_stack import DEVICES, SUPINE_AT_S, UNPLUGGED, Plan, Run, chaos_run, spool_key  # noqa: E402

MAX_TICK_GAP_S = 1.5


def summarise(run: Run) -> list[tuple[str, str, bool]]:
    """(check, figure, ok) rows."""
    rows: list[tuple[str, str, bool]] = []
    stored = run.stored()
    keys = {tuple(r) for r in stored}
    audited = run.auditor.reading_keys()
    missing = audited - keys
    rows.append(("readings the broker carried, stored", f"{len(audited) - len(missing)}/{len(audited)}",
                 not missing and keys == audited))  # fmt: skip
    spooled = {spool_key(t, p) for t, p in run.spooled_at_edge_kill}
    rows.append(("edge kill -9: spooled readings stored", f"{len(spooled & keys)}/{len(spooled)}", spooled <= keys))
    by_stream = Counter(s for _d, s, _q, _t in stored)
    influx = {m: run.influx.count(m) for m in ("posture", "breathing")}
    rows.append(("InfluxDB = SQLite after the outage", f"{influx} vs {dict(by_stream)}",
                 all(influx[m] == by_stream[m] for m in influx)))  # fmt: skip
    rows.append(("InfluxDB complete after the gateway", f"{run.influx_drained_s:.1f} s", True))

    ts_by: dict[str, list[int]] = defaultdict(list)
    for d, _s, _q, ts in stored:
        ts_by[d].append(ts)
    ev = run.events
    explained = {d: [(ev["edge-1 killed"], ev["edge-2 ready"])] for d in DEVICES}
    explained[UNPLUGGED].append((ev["unplugged"], ev["replugged"]))
    for d, times in sorted(ts_by.items()):
        times.sort()
        holes = [
            (x / 1000, y / 1000) for x, y in zip(times, times[1:], strict=False) if (y - x) / 1000 > MAX_TICK_GAP_S
        ]
        unexplained = [h for h in holes if not any(h[0] <= x <= h[1] and x - h[0] <= MAX_TICK_GAP_S
                                                   for x, _ in explained[d])]  # fmt: skip
        widths = ", ".join(f"{b - a:.1f} s" for a, b in holes)
        rows.append((f"{d}: holes only where no edge read it", f"{len(holes)} ({widths})", not unexplained))

    trail = run.transitions()
    raised = Counter(aid for aid, c, _a in trail if c == Change.RAISED)
    rows.append(("no alert raised twice", f"{len(raised)} alerts", all(n == 1 for n in raised.values())))
    seen = {a.id for _, a in run.auditor.alerts}
    rows.append(("alerts on MQTT = alerts stored", f"{len(seen)}/{len(raised)}", seen <= set(raised)))
    prone = run.prone_before_kill
    if prone is not None:
        counts = [a.notify_count for aid, c, a in trail if aid == prone.id and c in (Change.RENOTIFIED,
                                                                                     Change.ESCALATED)]  # fmt: skip
        esc = [a.notify_count for aid, c, a in trail if aid == prone.id and c == Change.ESCALATED]
        # Down past the child's turn (SUPINE_AT_S), the restarted gateway reads "supine" in the backlog
        # before its first tick: the alert resolves without the 3rd notification — correctly.
        turned_first = run.events["gateway-2 ready"] > run.sim_t0 + SUPINE_AT_S
        rows.append(("prone re-notify/escalation continued over kill -9", f"counts {counts}, escalated at {esc}",
                     counts == list(range(1, len(counts) + 1)) and len(esc) == (0 if turned_first else 1)))  # fmt: skip
    apnea = [a for _aid, c, a in trail if a.rule == "apnea" and c == Change.RAISED]
    if apnea:
        delay = (apnea[0].updated_ts - apnea[0].started_ts) / 1000
        rows.append(("apnea over a gateway kill -9: after the last breath", f"{delay:.2f} s", 10 <= delay <= 11))
    lost = run.lost_before_kill
    if lost is not None:
        sev = {a.severity for aid, _c, a in trail if aid == lost.id}
        rows.append(("unplugged sensor_lost over kill -9 stays critical", ",".join(s.value for s in sev),
                     sev == {Severity.CRITICAL}))  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--influx-s", type=float, default=300.0, help="InfluxDB outage (s)")
    p.add_argument("--broker-s", type=float, default=60.0, help="Mosquitto outage (s)")
    p.add_argument("--gateway-s", type=float, default=30.0, help="each gateway outage after kill -9 (s)")
    p.add_argument("--edge-s", type=float, default=30.0, help="edge outage after kill -9 (s)")
    p.add_argument("--unplugged-s", type=float, default=60.0, help="how long the sensor stays unplugged (s)")
    a = p.parse_args()
    plan = Plan(gateway_down_s=a.gateway_s, edge_down_s=a.edge_s, influx_down_s=a.influx_s,
                unplugged_s=a.unplugged_s, broker_down_s=a.broker_s)  # fmt: skip
    # A gateway down longer than the apnea's lead time (2 s into the apnea) misses its due time;
    # the alert then comes at the restart, still timed from the last breath.
    with tempfile.TemporaryDirectory(prefix="nw-chaos-") as tmp, chaos_run(Path(tmp), plan, say=print) as run:
        rows = summarise(run)
        width = max(len(r[0]) for r in rows)
        for name, figure, ok in rows:
            print(f"{'ok  ' if ok else 'FAIL'} {name:<{width}}  {figure}")
        failed = sum(not ok for *_, ok in rows)
        print(
            f"chaos: {len(rows) - failed}/{len(rows)} checks ok, {len(run.stored())} readings, "
            f"run {run.duration_s / 60:.1f} min (influx {a.influx_s:g} s, broker {a.broker_s:g} s, "
            f"gateway {a.gateway_s:g} s x2, edge {a.edge_s:g} s, unplugged {a.unplugged_s:g} s)"
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
