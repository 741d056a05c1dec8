"""What bench/alert_latency.py and bench/gateway_ingest.py share: a nursery kit of any size, a real
Mosquitto, the real ``nurserywatch gateway`` / ``dashboard`` processes, the edge's reading payloads,
and reading Prometheus /metrics (docs/metrics.md).

A nursery of ``scale`` × (60 mats, 60 posture clips, 10 air sensors): rooms of 10 children, each
child with a mat and a clip; one edge agent per room (20 devices, about a Pi's share) plus one agent
per 10 air sensors."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from nurserywatch.contract import AirReading, BreathingReading, Position, PostureReading
from tests.support import processes
from tests.support.mosquitto import MosquittoProcess

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Nursery:
    site: str
    scale: int
    rooms: list[str] = field(default_factory=list)
    #: agent id → its devices (mats and clips, or air sensors)
    agents: dict[str, list[str]] = field(default_factory=dict)
    mats: list[str] = field(default_factory=list)
    clips: list[str] = field(default_factory=list)
    air: list[str] = field(default_factory=list)

    def write_kit(self, path: Path) -> Path:
        devices, children = [], []
        n_children = 60 * self.scale
        for i in range(n_children):
            room = f"room-{i // 10:03d}"
            child, mat, clip = f"c{i:04d}", f"mat-{i:04d}", f"clip-{i:04d}"
            agent = f"pi-{room}"
            children.append({"id": child, "age_band": "1-2", "room": room})
            devices.append({"id": mat, "kind": "nap_mat", "room": room, "agent": agent, "child": child,
                            "transport": {"type": "serial", "port": f"/dev/nw/{mat}"}})
            devices.append({"id": clip, "kind": "posture_clip", "room": room, "agent": agent, "child": child,
                            "transport": {"type": "serial", "port": f"/dev/nw/{clip}"}})  # fmt: skip
            self.mats.append(mat)
            self.clips.append(clip)
            self.agents.setdefault(agent, []).extend([mat, clip])
            if room not in self.rooms:
                self.rooms.append(room)
        for j in range(10 * self.scale):
            room = self.rooms[j % len(self.rooms)]
            air, agent = f"co2-{j:04d}", f"pi-air-{j // 10:03d}"
            devices.append({"id": air, "kind": "mhz19b", "room": room, "agent": agent,
                            "transport": {"type": "serial", "port": f"/dev/nw/{air}"}})  # fmt: skip
            self.air.append(air)
            self.agents.setdefault(agent, []).append(air)
        kit = {
            "site": self.site, "name": f"bench x{self.scale}",
            "rooms": [{"id": r, "name": r} for r in self.rooms],
            "agents": [{"id": a} for a in self.agents],
            "devices": devices, "children": children,
        }  # fmt: skip
        path.write_text(yaml.safe_dump(kit, allow_unicode=True, sort_keys=False))
        return path


def breathing(seq: int, ts: int) -> bytes:
    """What the edge publishes once a second per mat (edge/channels/mat.py): a child breathing calmly."""
    return BreathingReading(ts=ts, seq=seq, rate_bpm=30.0, amplitude=60.0, motion=0.02, present=True, quality=0.9,
                            last_breath_ts=ts - 800).to_json()  # fmt: skip


def posture(seq: int, ts: int, position: Position = Position.SUPINE) -> bytes:
    return PostureReading(ts=ts, seq=seq, position=position, accel_mg=(0, 0, -1000)).to_json()


def air(seq: int, ts: int) -> bytes:
    return AirReading(ts=ts, seq=seq, co2_ppm=650.0).to_json()


def start_mosquitto(d: Path) -> MosquittoProcess:
    """A private broker, started; ``max_queued_messages 0``: a persistent session's queue is unbounded
    (the ingest bench queues the whole stream for an offline subscriber)."""
    mq = MosquittoProcess(d, persistence=False, max_queued_messages=0, log_types=("error", "warning"),
                          options=("max_queued_bytes 0", "set_tcp_nodelay true"))  # fmt: skip
    mq.start(timeout_s=20.0)
    return mq


def spawn(name: str, args: list[str], log_dir: Path) -> subprocess.Popen[bytes]:
    """``nurserywatch <args>`` in its own process group, output in ``log_dir/<name>.log``."""
    return processes.spawn(name, args, log_dir)[0]


stop = processes.stop


def metrics(url: str) -> dict[str, float]:
    """``name{a="b"}`` → value, from a /metrics page (labels sorted)."""
    text = httpx.get(url, timeout=5).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            lbl = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{lbl}}}" if lbl else s.name] = s.value
    return out


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory so far (``VmHWM``), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
