"""The sensor-lost rule (docs/gateway.md): silence is as dangerous as an apnea. One ``SensorLostMonitor``
per device, about the device (a child's mat and clip each get their own alert). Pure, on the
GATEWAY clock: a silent device has no message time.

The device counts as lost when any of these holds (the message names the first):

1. ``edge_offline`` — its edge agent said ``{"online": false}`` (usually the broker delivering the
   agent's last will);
2. ``device_offline`` — ``status/{device}`` said ``online: false``;
3. ``silent`` — it is *watched* and nothing arrived for ``silence_s``. Watched: a mat or clip bound
   to a child while its room has a nap session, or — outside a session — a mat whose newest reading
   said a child is on it. Silence counts from the latest of the last reading, the session start and
   the gateway's start (a restart is not silence).

During a session, (1) and (2) count as they are found, even at start-up. Outside a session they
count only after this gateway saw the agent / device online: offline states found at start-up
(retained from yesterday, devices switched off in the drawer) are not news.

Severity: **critical** for a bound mat or clip in a room with a nap session that was live — heard
during the session, or within ``silence_s`` before it started. **Warning** otherwise: outside a
session, for air sensors and thermometers, and for a bound device that has sent nothing since before
the session began (switched off, or its child is absent today: "check power and fit"), so an absent
child does not sound a critical alarm every nap. Once such a device has been heard and goes silent
again, the alert becomes critical (and must be acknowledged again).

Resolves once nothing is offline and the device's newest reading is at most ``fresh_s`` old, held
for ``clear_after_s`` (a device that stutters does not flap) — or at once when nothing is offline
and the device is not watched any more (the nap session ended).
"""

from __future__ import annotations

from enum import StrEnum

from gateway.config import RuleSet
from gateway.rules.events import RuleEvent, level_event
from gateway.rules.levels import Debounce, seconds_ms
from nurserywatch.contract import Severity

RULE = "sensor_lost"


class Reason(StrEnum):
    EDGE_OFFLINE = "edge_offline"
    DEVICE_OFFLINE = "device_offline"
    SILENT = "silent"
    NOT_STARTED = "not_started"


class SensorLostMonitor:
    def __init__(self, device: str, agent: str, cfg: RuleSet, *, monitoring: bool, mat: bool, created_ts: int) -> None:
        c = cfg.sensor_lost
        self.device = device
        self.agent = agent
        #: A mat or clip bound to a child: its silence during a nap is critical.
        self.monitoring = monitoring
        self.mat = mat
        self._silence_ms = seconds_ms(c.silence_s)
        self._fresh_ms = seconds_ms(c.fresh_s)
        self._debounce = Debounce(on_ms=0, off_ms=seconds_ms(c.clear_after_s))
        s = f"{c.silence_s:g}"
        self._texts = {
            Reason.EDGE_OFFLINE: (f"中継機（{agent}）との接続が切れました", f"Edge agent {agent} is offline"),
            Reason.DEVICE_OFFLINE: ("センサーがオフラインです", "Sensor reported offline"),
            Reason.SILENT: (f"センサーからの受信が{s}秒以上途絶えています",
                            f"No data from the sensor for {s} s or more"),
            Reason.NOT_STARTED: ("午睡中ですがセンサーからの受信がありません（電源と装着を確認してください）",
                                 "Nap session running but no data from this sensor (check power and fit)"),
        }  # fmt: skip
        #: Silence is never counted from before this gateway started (a restart is not silence).
        self._created = created_ts
        self._last_heard: int | None = None
        self._child_present = False
        self._device_offline_since: int | None = None
        self._device_seen_online = False
        self._edge_offline_since: int | None = None
        self._edge_seen_online = False
        self._session_start: int | None = None
        self._reason: Reason | None = None
        self._severity: Severity | None = None
        #: A restored critical alert: the device was live in the session before the restart.
        self._was_live = False

    # ------------------------------------------------------------ inputs (gateway time)

    def heard(self, now: int, present: bool | None = None) -> None:
        self._last_heard = now
        self._device_seen_online = True
        if present is not None:
            self._child_present = present

    def device_status(self, online: bool, now: int) -> None:
        if online:
            self._device_offline_since = None
            self._device_seen_online = True
        elif self._device_offline_since is None:
            self._device_offline_since = now

    def edge_status(self, online: bool, now: int) -> None:
        if online:
            self._edge_offline_since = None
            self._edge_seen_online = True
        elif self._edge_offline_since is None:
            self._edge_offline_since = now

    def set_session(self, start_ts: int | None) -> None:
        """The room's nap session started at ``start_ts``, or (None) there is none."""
        self._session_start = start_ts

    def restore(self, rule: str, severity: Severity, started_ts: int, message_en: str | None = None) -> None:
        """Seed an alert restored at start with the severity and reason it was stored with: the new
        process has not heard the device yet, and without this a critical alert was downgraded to
        warning (no re-notification) right after a restart while the device was still lost."""
        if rule == RULE:
            self._debounce.force(started_ts)
            self._severity = severity
            self._reason = next((r for r, (_ja, en) in self._texts.items() if en == message_en), None)
            self._was_live = severity is Severity.CRITICAL

    # ------------------------------------------------------------ judgement

    def tick(self, now: int) -> list[RuleEvent]:
        in_session = self._session_start is not None
        watched = (in_session and self.monitoring) or (not in_session and self.mat and self._child_present)
        reason, since = self._lost(now, in_session, watched)
        fresh = self._last_heard is not None and now - self._last_heard <= self._fresh_ms
        if reason is None and not watched:
            self._debounce.reset()  # nothing offline and nobody to watch (the nap ended): over at once
        else:
            self._debounce.update(now, reason is not None, reason is None and fresh)
        if not self._debounce.active:
            self._reason = self._severity = None
            return [level_event(RULE, self.device, None, None, now, None, {})]
        if reason is not None:
            # While data is coming back (clearing), keep the last reason's wording and severity.
            self._reason = reason
            self._severity = Severity.CRITICAL if self._critical(in_session) else Severity.WARNING
        shown = self._reason or Reason.SILENT
        severity = self._severity or Severity.WARNING
        # When monitoring was lost (last reading, offline report), not when the gateway noticed.
        started = since if reason is not None else (self._debounce.since or now)
        silent_s = None if self._last_heard is None else round((now - self._last_heard) / 1000, 1)
        value: float | str | None = silent_s if shown in (Reason.SILENT, Reason.NOT_STARTED) else shown.value
        return [level_event(RULE, self.device, severity, started, now, value, {severity: self._texts[shown]})]

    def _lost(self, now: int, in_session: bool, watched: bool) -> tuple[Reason | None, int]:
        if self._edge_offline_since is not None and (in_session or self._edge_seen_online):
            return Reason.EDGE_OFFLINE, self._edge_offline_since
        if self._device_offline_since is not None and (in_session or self._device_seen_online):
            return Reason.DEVICE_OFFLINE, self._device_offline_since
        if watched:
            ref = max(self._last_heard or self._created, self._session_start or self._created, self._created)
            if now - ref >= self._silence_ms:
                return (Reason.SILENT if self._live(in_session) else Reason.NOT_STARTED), ref
        return None, now

    def _live(self, in_session: bool) -> bool:
        """Heard during the session, or just before it began (outside a session: heard at all)."""
        if self._last_heard is None:
            return self._was_live
        if not in_session or self._session_start is None:
            return True
        return self._last_heard >= self._session_start - self._silence_ms

    def _critical(self, in_session: bool) -> bool:
        return in_session and self.monitoring and self._live(in_session)
