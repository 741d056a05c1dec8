"""The nap-check sheet of a room and day, pure: records with their confirmations and corrections
applied, as rows; CSV (UTF-8 with BOM so Excel in Japan opens it, Japanese or English headers) and
JSON; and the CSV read back (the export round-trips).

A row shows the *current* values (corrections applied, latest last); the ``corrections`` column keeps
what was changed, from what, by whom and when, so the original automatic values stay visible.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from gateway.records.entries import AUTO, ChainedEntry, ChainHead, CheckRecord, Confirmation, Correction, VerifyResult
from nurserywatch.contract import Position, Stream
from nurserywatch.kit import AgeBand

Lang = Literal["ja", "en"]
DEFAULT_TZ = "Asia/Tokyo"


@dataclass(frozen=True, slots=True)
class SheetRow:
    seq: int
    time: int  # unix ms: the check time
    room: str
    child: str
    name: str
    age_band: AgeBand
    interval_min: float
    partial: bool
    posture: Position | None
    prone_seen: bool | None
    on_mat: bool | None
    breathing_rate_bpm: float | None
    breathing_rate_mean_bpm: float | None
    breathing_ok: bool | None
    body_temp_c: float | None
    alerts: tuple[tuple[str, str], ...]  # (rule, alert id)
    data_missing: bool
    missing: tuple[Stream, ...]
    recorded_by: str
    confirmed_by: tuple[str, ...]
    confirmed_at: int | None  # unix ms of the first confirmation
    corrections: str
    note: str


#: The last day whose end (the next midnight) Python's calendar can hold: 9999-12-30.
LAST_DAY = date.max - timedelta(days=1)


class DayOutOfRange(ValueError):
    """A date the records cannot be looked up by (its day has no end in the calendar)."""


def day_bounds(day: date, tz: ZoneInfo) -> tuple[int, int]:
    """Unix ms of local midnight of ``day`` and of the next day (23 or 25 h around DST changes).
    DayOutOfRange for 9999-12-31, whose next midnight does not exist (it was an OverflowError)."""
    if day > LAST_DAY:
        raise DayOutOfRange(f"{day.isoformat()}: out of range (the last day with records is {LAST_DAY.isoformat()})")
    start = datetime.combine(day, time(), tz)
    end = datetime.combine(day + timedelta(days=1), time(), tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def build_sheet(
    records: Sequence[ChainedEntry],
    followups: Iterable[ChainedEntry],
    tz: ZoneInfo,
    names: Mapping[str, str] | None = None,
) -> list[SheetRow]:
    """One row per record, in check-time order; ``followups`` are the confirmations and corrections;
    ``names``: child id → name for the sheet (names live in the kit, never in the records)."""
    names = names or {}
    root: dict[int, int] = {r.seq: r.seq for r in records}  # correction seq -> record seq
    confirmations: dict[int, list[Confirmation]] = {}
    corrections: dict[int, list[tuple[int, Correction]]] = {}
    for f in sorted(followups, key=lambda e: e.seq):
        e = f.entry
        if isinstance(e, Correction) and e.corrects in root:
            root[f.seq] = root[e.corrects]
            corrections.setdefault(root[e.corrects], []).append((f.seq, e))
        elif isinstance(e, Confirmation) and e.refers in root:
            confirmations.setdefault(root[e.refers], []).append(e)
    rows = []
    for r in records:
        rec = r.entry
        if not isinstance(rec, CheckRecord):
            continue
        current: dict[str, Any] = {
            "posture": rec.posture,
            "prone_seen": rec.prone_seen,
            "on_mat": rec.on_mat,
            "breathing_rate_bpm": rec.breathing_rate_bpm,
            "breathing_ok": rec.breathing_ok,
            "body_temp_c": rec.body_temp_c,
            "note": "",
        }
        notes = []
        for seq, c in corrections.get(r.seq, []):
            changed = []
            for key, value in c.changes.items():
                new = Position(value) if key == "posture" and value is not None else value
                if key == "note":
                    new = value or ""
                changed.append(f"{key} {_plain(current[key])}→{_plain(new)}")
                current[key] = new
            why = f" ({c.reason})" if c.reason else ""
            notes.append(f"#{seq} {c.by} {_local(c.ts, tz)}: {', '.join(changed)}{why}")
        confs = confirmations.get(r.seq, [])
        rows.append(
            SheetRow(
                seq=r.seq,
                time=rec.ts,
                room=rec.room,
                child=rec.child,
                name=names.get(rec.child, ""),
                age_band=rec.age_band,
                interval_min=rec.interval_s / 60,
                partial=rec.partial,
                posture=current["posture"],
                prone_seen=current["prone_seen"],
                on_mat=current["on_mat"],
                breathing_rate_bpm=current["breathing_rate_bpm"],
                breathing_rate_mean_bpm=rec.breathing_rate_mean_bpm,
                breathing_ok=current["breathing_ok"],
                body_temp_c=current["body_temp_c"],
                alerts=tuple((a.rule, a.id) for a in rec.alerts),
                data_missing=rec.data_missing,
                missing=rec.missing,
                recorded_by=rec.by,
                confirmed_by=tuple(dict.fromkeys(c.by for c in confs)),
                confirmed_at=min((c.ts for c in confs), default=None),
                corrections=" / ".join(notes),
                note=current["note"],
            )
        )
    rows.sort(key=lambda row: (row.time, row.child, row.seq))
    return rows


def covered_head(entries: Iterable[ChainedEntry]) -> ChainHead | None:
    """The last chain entry a sheet is made of (its records, confirmations and corrections): its seq
    and hash pin everything on the sheet, since that hash covers every entry before it. Printed
    on the sheet and written in the CSV, to check later with ``records verify --expect-head``."""
    last = max(entries, key=lambda e: e.seq, default=None)
    return None if last is None else last.head


def _plain(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value.value if isinstance(value, Position) else value)


def _local(ts: int, tz: ZoneInfo) -> str:
    dt = datetime.fromtimestamp(ts / 1000, tz)
    text = dt.strftime("%Y-%m-%d %H:%M:%S")
    return text if ts % 1000 == 0 else f"{text}.{ts % 1000:03d}"


def _parse_local(text: str, tz: ZoneInfo) -> int:
    main, _, ms = text.partition(".")
    dt = datetime.strptime(main, "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz)
    return int(dt.timestamp()) * 1000 + (int(ms) if ms else 0)


# ---------------------------------------------------------------- CSV

_POSTURE_JA = {
    Position.SUPINE: "仰向け",
    Position.PRONE: "うつぶせ",
    Position.LEFT: "左向き",
    Position.RIGHT: "右向き",
    Position.UPRIGHT: "起き上がり",
    Position.UNKNOWN: "不明",
}
_BAND_JA = {AgeBand.INFANT: "0歳", AgeBand.TODDLER: "1〜2歳", AgeBand.PRESCHOOL: "3歳以上"}
_STREAM_JA = {Stream.BREATHING: "呼吸", Stream.POSTURE: "姿勢"}
_YESNO = {"ja": ("あり", "なし"), "en": ("yes", "no")}
_OKNG = {"ja": ("○", "×"), "en": ("ok", "not ok")}
_AUTO = {"ja": "自動", "en": AUTO}

#: (field, Japanese header, English header, kind)
_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("seq", "記録番号", "seq", "int"),
    ("time", "確認時刻", "check_time", "time"),
    ("room", "部屋", "room", "str"),
    ("child", "園児ID", "child", "str"),
    ("name", "名前", "name", "str"),
    ("age_band", "年齢区分", "age_band", "band"),
    ("interval_min", "間隔(分)", "interval_min", "float"),
    ("partial", "途中終了", "partial", "yesno"),
    ("posture", "姿勢", "posture", "posture"),
    ("prone_seen", "うつぶせ検知", "prone_seen", "yesno"),
    ("on_mat", "マット在床", "on_mat", "yesno"),
    ("breathing_rate_bpm", "呼吸数(回/分)", "breathing_rate_bpm", "float"),
    ("breathing_rate_mean_bpm", "平均呼吸数(回/分)", "breathing_rate_mean_bpm", "float"),
    ("breathing_ok", "呼吸", "breathing_ok", "okng"),
    ("body_temp_c", "体温(℃)", "body_temp_c", "float"),
    ("alerts", "アラート", "alerts", "alerts"),
    ("data_missing", "データ欠落", "data_missing", "yesno"),
    ("missing", "欠落センサー", "missing_streams", "streams"),
    ("recorded_by", "記録者", "recorded_by", "by"),
    ("confirmed_by", "確認者", "confirmed_by", "names"),
    ("confirmed_at", "確認日時", "confirmed_at", "time"),
    ("corrections", "訂正", "corrections", "str"),
    ("note", "備考", "note", "str"),
)


def _fmt(kind: str, value: Any, lang: Lang, tz: ZoneInfo) -> str:
    if value is None:
        return ""
    match kind:
        case "time":
            return _local(value, tz)
        case "float":
            short = f"{value:g}"  # 5 rather than 5.0 for people; exact when it would lose digits
            return short if float(short) == value else repr(float(value))
        case "yesno" | "okng":
            labels = _YESNO[lang] if kind == "yesno" else _OKNG[lang]
            return labels[0] if value else labels[1]
        case "band":
            return _BAND_JA[value] if lang == "ja" else str(value.value)
        case "posture":
            return _POSTURE_JA[value] if lang == "ja" else str(value.value)
        case "streams":
            return "・".join(_STREAM_JA[s] if lang == "ja" else s.value for s in value)
        case "alerts":
            return " ".join(f"{rule}:{aid}" for rule, aid in value)
        case "names":
            return "; ".join(value)
        case "by":
            return _AUTO[lang] if value == AUTO else str(value)
    return str(value)


def _unlabel(labels: Mapping[Any, str], text: str) -> Any:
    return next(k for k, v in labels.items() if v == text)


def _parse(kind: str, text: str, lang: Lang, tz: ZoneInfo) -> Any:
    parsers: dict[str, Callable[[str], Any]] = {
        "int": int,
        "str": str,
        "time": lambda t: _parse_local(t, tz),
        "float": float,
        "yesno": lambda t: t == _YESNO[lang][0],
        "okng": lambda t: t == _OKNG[lang][0],
        "band": lambda t: _unlabel(_BAND_JA, t) if lang == "ja" else AgeBand(t),
        "posture": lambda t: _unlabel(_POSTURE_JA, t) if lang == "ja" else Position(t),
        "streams": lambda t: tuple(_unlabel(_STREAM_JA, s) if lang == "ja" else Stream(s) for s in t.split("・")),
        "alerts": lambda t: tuple(tuple(a.split(":", 1)) for a in t.split(" ")),
        "names": lambda t: tuple(t.split("; ")),
        "by": lambda t: AUTO if t == _AUTO[lang] else t,
    }
    if text == "":
        empty: dict[str, Any] = {"str": "", "streams": (), "alerts": (), "names": (), "yesno": None, "okng": None}
        return empty.get(kind)
    return parsers[kind](text)


#: The CSV's last row: this label, then ``SEQ:HASH`` of ``covered_head`` (what `records verify
#: --expect-head` takes). A data row starts with its seq, a number, so "#" cannot be one.
CHAIN_HEAD_LABEL: dict[Lang, str] = {
    "ja": "#記録チェーン（改ざん確認用: nurserywatch records verify --expect-head）",
    "en": "#chain head (tamper check: nurserywatch records verify --expect-head)",
}


def to_csv(
    rows: Iterable[SheetRow], lang: Lang = "ja", tz: ZoneInfo | None = None, head: ChainHead | None = None
) -> bytes:
    """The sheet as CSV bytes: UTF-8 with BOM, CRLF line ends (what Excel expects); ``head``
    (``covered_head``) as the last row."""
    zone = tz or ZoneInfo(DEFAULT_TZ)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow([ja if lang == "ja" else en for _f, ja, en, _k in _COLUMNS])
    for row in rows:
        w.writerow([_fmt(kind, getattr(row, f), lang, zone) for f, _ja, _en, kind in _COLUMNS])
    if head is not None:
        w.writerow([CHAIN_HEAD_LABEL[lang], f"{head.seq}:{head.hash}"])
    return out.getvalue().encode("utf-8-sig")


def read_csv(data: bytes, tz: ZoneInfo | None = None) -> tuple[list[SheetRow], ChainHead | None]:
    """Read an exported CSV back (either language; told apart by its header): its rows and the chain
    head of its last row (None for a CSV without one)."""
    zone = tz or ZoneInfo(DEFAULT_TZ)
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    header = next(reader)
    lang: Lang = "ja" if header[0] == _COLUMNS[0][1] else "en"
    expected = [ja if lang == "ja" else en for _f, ja, en, _k in _COLUMNS]
    if header != expected:
        raise ValueError(f"not a nap-check export: header {header[:3]}… is not {expected[:3]}…")
    rows: list[SheetRow] = []
    head: ChainHead | None = None
    for cells in reader:
        if head is not None:
            raise ValueError("not a nap-check export: a row follows the chain head row")
        if cells and cells[0] == CHAIN_HEAD_LABEL[lang]:
            seq, _, digest = (cells[1] if len(cells) == 2 else "").partition(":")
            if not seq.isdigit() or len(digest) != 64:
                raise ValueError(f"not a nap-check export: the chain head row holds {cells[1:]!r}, not SEQ:HASH")
            head = ChainHead(int(seq), digest)
            continue
        rows.append(SheetRow(**{f: _parse(kind, cell, lang, zone)
                                for (f, _ja, _en, kind), cell in zip(_COLUMNS, cells, strict=True)}))  # fmt: skip
    return rows, head


def from_csv(data: bytes, tz: ZoneInfo | None = None) -> list[SheetRow]:
    """The rows of an exported CSV (``read_csv`` without the chain head)."""
    return read_csv(data, tz)[0]


# ---------------------------------------------------------------- JSON


def to_json(
    rows: Sequence[SheetRow],
    entries: Iterable[ChainedEntry],
    *,
    room: str,
    day: date,
    tz: ZoneInfo,
    chain: VerifyResult,
) -> str:
    """Rows plus the raw chained entries they come from (with hashes, so anyone can re-check them:
    ``sha256(canonical JSON of body) == hash``) and the chain state at export time; ``sheet_head``
    is ``covered_head`` (as in the CSV)."""
    entries = list(entries)
    sheet_head = covered_head(entries)
    doc = {
        "room": room,
        "date": day.isoformat(),
        "timezone": tz.key,
        "chain": {
            "ok": chain.ok,
            "entries": chain.entries,
            "head": {"seq": chain.head.seq, "hash": chain.head.hash},
            "problem": chain.problem,
        },
        "sheet_head": None if sheet_head is None else {"seq": sheet_head.seq, "hash": sheet_head.hash},
        "rows": [_row_json(r) for r in rows],
        "entries": [
            {"seq": e.seq, "prev_hash": e.prev_hash, "hash": e.hash, "body": json.loads(e.body)}
            for e in sorted(entries, key=lambda e: e.seq)
        ],
    }
    return json.dumps(doc, ensure_ascii=False, indent=1)


def _row_json(row: SheetRow) -> dict[str, Any]:
    d = asdict(row)
    d["alerts"] = [{"rule": r, "id": i} for r, i in row.alerts]
    return d


def rows_from_json(text: str) -> list[SheetRow]:
    """The rows of a JSON export (for tests and tools)."""
    out = []
    for d in json.loads(text)["rows"]:
        d["alerts"] = tuple((a["rule"], a["id"]) for a in d["alerts"])
        d["missing"] = tuple(Stream(s) for s in d["missing"])
        d["confirmed_by"] = tuple(d["confirmed_by"])
        d["age_band"] = AgeBand(d["age_band"])
        d["posture"] = None if d["posture"] is None else Position(d["posture"])
        out.append(SheetRow(**d))
    return out


assert {f.name for f in fields(SheetRow)} == {c[0] for c in _COLUMNS}, "every sheet field has a CSV column"
