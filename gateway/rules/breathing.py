"""The mat rules (docs/gateway.md): apnea, breathing rate low / high, child off the mat during a nap, and a
mat that cannot tell whether the child is on it during a nap.

One ``MatMonitor`` per nap mat, pure, on message time. The edge reports, about once a second,
``present`` (a child's weight on the mat), ``rate_bpm`` (null while it cannot tell), ``motion``,
``quality`` and ``last_breath_ts`` (the time of the last detected breath). ``feed`` judges a
reading at its own time; ``tick`` judges again at a later device time (the gateway's timer tick),
so the apnea alert comes 20.0 s after the last breath and not at the next reading.

* **apnea** (critical): present and ``now − reference ≥ min_duration_s``. The reference is the
  last breath; when the child lay down after it (an observed empty→present change), the moment
  they lay down; with no breath reported yet, the first present reading. ``started_ts`` is that
  reference — when breathing movement was last seen. Resolves when breathing is back —
  ``clear_breaths`` new breaths since the pause and no new pause reaching the threshold, held for
  ``clear_after_s`` (one gasp between two pauses keeps the one alert) — or at once when the mat is empty.
  A new pause is never timed from before the last resolution (no overlapping alerts, issue 13).
* **breathing_rate_low** (critical): present, rate below ``below_bpm`` for ``min_duration_s``; resolves
  at ``below_bpm + hysteresis_bpm`` or more held for ``clear_after_s``, or on an empty mat.
* **breathing_rate_high** (warning): present, rate above ``above_bpm`` (60 / 50 / 40 by age band) for
  ``min_duration_s``; resolves at ``above_bpm − hysteresis_bpm`` or less held for ``clear_after_s``.
  Readings with more motion than ``max_motion`` are not judged (awake, moving child).
* A null rate, or a quality below ``min_quality``, is unknown: it neither starts nor ends a run.
* **empty mat** (``present: false``) is not an apnea: it ends monitoring of the mat (every alert
  above resolves). **Unknown** (``present: null``: the edge has no evidence yet, e.g. it restarted
  while the child lay still or in apnea) is never empty: it keeps the last known presence — an
  active apnea stays — and, when the mat was not known to be occupied, a breath reported after the
  mat was last known empty is still timed (the apnea rule runs from ``last_breath_ts``). With no
  known presence and no such breath there is nothing to time an apnea from: the next rule speaks.
* **child_off_mat** (warning, bound mats only): during a nap session, a child who was on the mat
  during the session and has been off it for ``min_duration_s``. Resolves when the child has been
  back for ``clear_after_s``, or when the session ends.
* **presence_unknown** (bound mats only): during a nap session, the mat's newest readings have
  said ``present: null`` for ``min_duration_s`` — nobody can tell whether the child is on the mat,
  so an apnea could go unseen. **Critical** when the mat was known occupied just before the unknown
  stretch began (typically an edge or Pi restart mid-nap: the child is most likely still there,
  possibly not breathing), **warning** otherwise (never known, or known empty: most likely an empty
  mat after an edge restart — still a loss of monitoring staff must see). Resolves once presence has
  been known for ``clear_after_s``, or when the session ends.
"""

from __future__ import annotations

from gateway.config import APNEA, BREATHING_HIGH, BREATHING_LOW, RuleSet
from gateway.rules.events import Messages, RuleEvent, level_event
from gateway.rules.levels import Debounce, Graded, Level, above, below, seconds_ms
from nurserywatch.contract import BreathingReading, Severity

CHILD_OFF_MAT = "child_off_mat"
PRESENCE_UNKNOWN = "presence_unknown"
RULES = (APNEA, BREATHING_LOW, BREATHING_HIGH, CHILD_OFF_MAT, PRESENCE_UNKNOWN)


def _n(value: float) -> str:
    return f"{value:g}"


class MatMonitor:
    def __init__(self, device: str, cfg: RuleSet, *, bound: bool) -> None:
        self.device = device
        self.bound = bound
        a, lo, hi, off = cfg.apnea, cfg.breathing_rate_low, cfg.breathing_rate_high, cfg.child_off_mat
        self._apnea_ms = seconds_ms(a.min_duration_s)
        self._apnea = Debounce(on_ms=0, off_ms=seconds_ms(a.clear_after_s))
        self._clear_breaths = a.clear_breaths
        self._new_breaths = 0  # breaths seen since the pause last reached min_duration_s
        self._low = Graded([Level(Severity.CRITICAL, *below(lo.below_bpm, lo.hysteresis_bpm),
                                  seconds_ms(lo.min_duration_s), seconds_ms(lo.clear_after_s))])  # fmt: skip
        self._high = Graded([Level(Severity.WARNING, *above(hi.above_bpm, hi.hysteresis_bpm, inclusive=False),
                                   seconds_ms(hi.min_duration_s), seconds_ms(hi.clear_after_s))])  # fmt: skip
        self._off = Debounce(on_ms=seconds_ms(off.min_duration_s), off_ms=seconds_ms(off.clear_after_s))
        unk = cfg.presence_unknown
        self._unknown = Debounce(on_ms=seconds_ms(unk.min_duration_s), off_ms=seconds_ms(unk.clear_after_s))
        self._low_quality, self._high_quality, self._max_motion = lo.min_quality, hi.min_quality, hi.max_motion
        self.messages: dict[str, Messages] = {
            APNEA: {Severity.CRITICAL: (
                f"呼吸の動きが{_n(a.min_duration_s)}秒以上ありません",
                f"No breathing movement for {_n(a.min_duration_s)} s or more")},
            BREATHING_LOW: {Severity.CRITICAL: (
                f"呼吸数が毎分{_n(lo.below_bpm)}回未満の状態が続いています",
                f"Breathing rate below {_n(lo.below_bpm)}/min for {_n(lo.min_duration_s)} s or more")},
            BREATHING_HIGH: {Severity.WARNING: (
                f"呼吸数が毎分{_n(hi.above_bpm)}回を超える状態が続いています",
                f"Breathing rate above {_n(hi.above_bpm)}/min for {_n(hi.min_duration_s)} s or more")},
            CHILD_OFF_MAT: {Severity.WARNING: (
                f"午睡中に子どもがマットから離れています（{_n(off.min_duration_s)}秒以上）",
                f"Child off the mat for {_n(off.min_duration_s)} s or more during the nap")},
            PRESENCE_UNKNOWN: {
                Severity.CRITICAL: (
                    f"在床を確認できません（{_n(unk.min_duration_s)}秒以上）。直前まで在床していました。"
                    "子どもを直接確認してください",
                    f"Cannot tell whether the child is on the mat ({_n(unk.min_duration_s)} s or more); "
                    "the child was on it just before: check the child directly"),
                Severity.WARNING: (
                    f"在床を確認できません（{_n(unk.min_duration_s)}秒以上）",
                    f"Cannot tell whether the child is on the mat ({_n(unk.min_duration_s)} s or more)")},
        }  # fmt: skip
        # What the newest reading said.
        self.present: bool | None = None
        self._present_since: int | None = None  # an observed empty→present change
        self._first_present: int | None = None
        self._empty_at: int | None = None  # the newest reading that said empty
        #: Whether the newest reading said present true/false (True), null (False); None before any.
        self._known: bool | None = None
        #: The last known presence when the current unknown stretch began was "on the mat".
        self._unknown_after_present = False
        self._last_breath: int | None = None
        #: When the last apnea alert resolved: no new pause is timed from before it (see _judge_apnea).
        self._apnea_ended: int | None = None
        self._rate: float | None = None
        self._motion: float | None = None
        self._quality: float | None = None
        # Nap session of the mat's room.
        self._in_session = False
        self._on_mat_in_session = False

    # ------------------------------------------------------------ inputs

    def feed(self, r: BreathingReading) -> list[RuleEvent]:
        if r.present is None and self._known is not False:
            self._unknown_after_present = self.present is True
        self._known = r.present is not None
        if r.present is False:
            self._empty_at = r.ts
        if r.present is not None:
            if r.present and self.present is False:
                self._present_since = r.ts
            if r.present and self._first_present is None:
                self._first_present = r.ts
            self.present = r.present
        if r.last_breath_ts is not None and (self._last_breath is None or r.last_breath_ts > self._last_breath):
            self._last_breath = r.last_breath_ts
            self._new_breaths += 1
        self._rate, self._motion, self._quality = r.rate_bpm, r.motion, r.quality
        if self.present and self._in_session:
            self._on_mat_in_session = True
        return self.evaluate(r.ts)

    def set_session(self, active: bool) -> None:
        self._in_session = active
        # A child already lying on the mat when the nap starts counts as on it.
        self._on_mat_in_session = active and self.present is True

    def restore(self, rule: str, severity: Severity, started_ts: int) -> None:
        """Seed the state of an alert restored at start, so it resolves by its clear rule."""
        if rule == APNEA:
            self._apnea.force(started_ts)
        elif rule == BREATHING_LOW:
            self._low.force(severity, started_ts)
        elif rule == BREATHING_HIGH:
            self._high.force(severity, started_ts)
        elif rule == CHILD_OFF_MAT:
            self._off.force(started_ts)
        elif rule == PRESENCE_UNKNOWN:
            self._unknown.force(started_ts)
            self._unknown_after_present = severity is Severity.CRITICAL

    # ------------------------------------------------------------ judgement

    def tick(self, ts: int) -> list[RuleEvent]:
        return self.evaluate(ts)

    def evaluate(self, ts: int) -> list[RuleEvent]:
        d = self.device
        return [
            self._judge_apnea(ts),
            level_event(BREATHING_LOW, d, *self._judge_rate(self._low, ts, self._low_quality, None), ts,
                        self._rate, self.messages[BREATHING_LOW]),
            level_event(BREATHING_HIGH, d, *self._judge_rate(self._high, ts, self._high_quality, self._max_motion),
                        ts, self._rate, self.messages[BREATHING_HIGH]),
            self._judge_off_mat(ts),
            self._judge_unknown(ts),
        ]  # fmt: skip

    def _reference(self) -> int | None:
        ref = self._last_breath
        if self._present_since is not None and (ref is None or self._present_since > ref):
            ref = self._present_since
        return ref if ref is not None else self._first_present

    def _judge_apnea(self, ts: int) -> RuleEvent:
        ref = self._reference()
        present = self.present
        if self._known is False and present is not True:
            # Unknown is never empty: a breath reported since the mat was last known empty means a
            # child on it — time the apnea from it (an older breath belongs to before the empty mat).
            breath = self._last_breath
            fresh = breath is not None and (self._empty_at is None or breath > self._empty_at)
            present, ref = (True, breath) if fresh else (present, ref)
        if ref is not None and self._apnea_ended is not None:
            # A pause cannot begin before the last apnea ended: a breath seen before its resolution
            # (the last one the old edge sent, or a restarted edge's start-up breath) would time a
            # second alert that overlaps the first. The alert still comes, timed from the resolution.
            ref = max(ref, self._apnea_ended)
        was_active = self._apnea.active
        if present is False:
            self._apnea.reset()
        elif present is True and ref is not None:
            fire = ts - ref >= self._apnea_ms
            if fire:
                self._new_breaths = 0
            self._apnea.update(ts, fire, not fire and self._new_breaths >= self._clear_breaths)
        active = self._apnea.active
        if was_active and not active:
            self._apnea_ended = ts
        # started_ts is the last breath (when breathing movement was last seen), not the moment
        # the threshold was crossed; value is the pause in seconds when judged.
        started = ref if ref is not None and ref <= ts else self._apnea.since
        value = (ts - started) / 1000 if active and started is not None else None
        return level_event(APNEA, self.device, Severity.CRITICAL if active else None, started, ts, value,
                           self.messages[APNEA])  # fmt: skip

    def _judge_rate(
        self, graded: Graded, ts: int, min_quality: float, max_motion: float | None
    ) -> tuple[Severity | None, int | None]:
        if self.present is False:
            graded.reset()
        elif self.present is True:
            usable = (
                self._rate is not None
                and (self._quality is None or self._quality >= min_quality)
                and (max_motion is None or self._motion is None or self._motion <= max_motion)
            )
            graded.update(ts, self._rate if usable else None)
        return graded.severity, graded.since

    def _judge_unknown(self, ts: int) -> RuleEvent:
        if not (self.bound and self._in_session):
            self._unknown.reset()
        elif self._known is not None:
            self._unknown.update(ts, not self._known, self._known)
        active = self._unknown.active
        since = self._unknown.since
        severity = (Severity.CRITICAL if self._unknown_after_present else Severity.WARNING) if active else None
        value = (ts - since) / 1000 if active and since is not None else None
        return level_event(PRESENCE_UNKNOWN, self.device, severity, since, ts, value,
                           self.messages[PRESENCE_UNKNOWN])  # fmt: skip

    def _judge_off_mat(self, ts: int) -> RuleEvent:
        if not (self.bound and self._in_session):
            self._off.reset()
        else:
            off = self._on_mat_in_session and self.present is False
            self._off.update(ts, off, self.present is True)
        active = self._off.active
        since = self._off.since
        value = (ts - since) / 1000 if active and since is not None else None
        return level_event(CHILD_OFF_MAT, self.device, Severity.WARNING if active else None, since, ts, value,
                           self.messages[CHILD_OFF_MAT])  # fmt: skip
