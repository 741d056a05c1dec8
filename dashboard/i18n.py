"""Every string the dashboard shows, in one catalogue. Japanese is the default; English is
available with ``?lang=en``. The page gets the catalogue of its language both in the server-rendered
HTML and as JSON for the live script, so the two can never disagree."""

from __future__ import annotations

from typing import Final, Literal, get_args

Lang = Literal["ja", "en"]
LANGS: Final[tuple[Lang, ...]] = get_args(Lang)
DEFAULT_LANG: Final[Lang] = "ja"

# key -> (ja, en). Placeholders in {braces} are filled by the server template or app.js.
_CATALOGUE: Final[dict[str, tuple[str, str]]] = {
    "title": ("午睡チェック スタッフルーム", "Nap check — staff room"),
    "disclaimer": (
        "このシステムは保育士の午睡チェックを補助するものです。SIDS を予防する装置ではありません。",
        "This system assists the staff's own nap checks. It is not a device that prevents SIDS.",
    ),
    "lang_switch": ("English", "日本語"),
    "nav.label": ("ページ", "Pages"),
    "nav.room": ("お昼寝ルーム", "Nap room"),
    "staff_name": ("担当者名", "Your name"),
    "staff_name_placeholder": ("未入力なら「staff」", "“staff” if empty"),
    "alerts_heading": ("アラート", "Alerts"),
    "no_alerts": ("アラートはありません", "No alerts"),
    "ack": ("確認", "Acknowledge"),
    "ack_sending": ("送信中…", "Sending…"),
    "ack_failed": ("確認を送信できませんでした: {reason}", "Could not send the acknowledgement: {reason}"),
    "acknowledged_by": ("確認済み: {by}（{time}）", "Acknowledged by {by} at {time}"),
    "state_active": ("発生中", "Active"),
    "state_resolved_unacked": ("解消済み・未確認", "Resolved, not yet acknowledged"),
    "since": ("{time} から", "since {time}"),
    "severity.critical": ("緊急", "Critical"),
    "severity.warning": ("注意", "Warning"),
    "severity.info": ("情報", "Info"),
    "posture.supine": ("仰向け", "On back"),
    "posture.prone": ("うつぶせ", "Face down"),
    "posture.left": ("左向き", "On left side"),
    "posture.right": ("右向き", "On right side"),
    "posture.upright": ("起きている", "Sitting / standing"),
    "posture.unknown": ("不明", "Unknown"),
    "no_reading": ("データなし", "No data"),
    "seconds_ago": ("{n}秒前", "{n} s ago"),
    "minutes_ago": ("{n}分前", "{n} min ago"),
    "at_time": ("{time} の値", "as of {time}"),
    "no_children": ("この部屋に登録された園児はいません", "No children registered in this room"),
    "child_id": ("ID", "ID"),
    "sensor_online": ("接続", "online"),
    "sensor_offline": ("切断", "offline"),
    "sensor_unknown": ("未受信", "no status yet"),
    "battery": ("電池 {n}%", "battery {n}%"),
    "agents_heading": ("エッジ機器", "Edge agents"),
    "live_ok": ("リアルタイム表示中", "Live"),
    "live_lost": (
        "サーバーとの接続が切れています。表示が古い可能性があります。",
        "Lost the connection to the server. The view may be out of date.",
    ),
    "mqtt_down": (
        "センサーネットワーク（MQTT）に接続できていません。表示が古い可能性があります。",
        "Not connected to the sensor network (MQTT). The view may be out of date.",
    ),
}


def catalogue(lang: Lang) -> dict[str, str]:
    """All strings of one language, keyed as above."""
    i = LANGS.index(lang)
    return {key: texts[i] for key, texts in _CATALOGUE.items()}


def pick_lang(requested: str | None, default: Lang = DEFAULT_LANG) -> Lang:
    """The language asked for in the query string, or the default for anything unknown."""
    for lang in LANGS:
        if requested == lang:
            return lang
    return default
