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
    # ---- login, roles, user admin (AUTH: dashboard/auth*.py)
    "login.title": ("ログイン", "Sign in"),
    "login.username": ("ユーザー名", "Username"),
    "login.password": ("パスワード", "Password"),
    "login.submit": ("ログイン", "Sign in"),
    "login.failed": (
        "ログインできませんでした。ユーザー名とパスワードを確認してください。",
        "Could not sign in. Check the username and password.",
    ),
    "login.throttled": (
        "失敗が続いたため一時的にログインを止めています。{n}秒後にもう一度お試しください。",
        "Too many failed attempts. Try again in {n} s.",
    ),
    "login.bad_form": (
        "ページの有効期限が切れました。もう一度入力してください。",
        "The page expired. Please enter your details again.",
    ),
    "login.signed_in_as": ("{name}（{role}）", "{name} ({role})"),
    "logout": ("ログアウト", "Sign out"),
    "role.staff": ("保育スタッフ", "staff"),
    "role.manager": ("管理者（園長など）", "manager"),
    "role.admin": ("システム管理者", "admin"),
    "forbidden.title": ("権限がありません", "Not allowed"),
    "forbidden.text": (
        "このページを開く権限がありません。必要なら管理者に依頼してください。",
        "Your account may not open this page. Ask an admin if you need it.",
    ),
    "forbidden.back": ("お昼寝ルームに戻る", "Back to the nap room"),
    "nav.admin_users": ("ユーザー管理", "Users"),
    "admin.users_heading": ("ユーザー", "Users"),
    "admin.add_heading": ("ユーザーを追加", "Add a user"),
    "admin.username": ("ユーザー名", "Username"),
    "admin.display_name": ("表示名（確認者として表示）", "Display name (shown as who checked)"),
    "admin.role": ("役割", "Role"),
    "admin.password": ("初期パスワード（10文字以上）", "Initial password (10+ characters)"),
    "admin.add": ("追加", "Add"),
    "admin.change_role": ("変更", "Change"),
    "admin.disable": ("無効にする", "Disable"),
    "admin.enable": ("有効にする", "Enable"),
    "admin.status": ("状態", "Status"),
    "admin.enabled": ("有効", "enabled"),
    "admin.disabled": ("無効", "disabled"),
    "admin.last_login": ("最終ログイン", "Last sign-in"),
    "admin.never": ("なし", "never"),
    "admin.done": ("変更しました: {what}", "Done: {what}"),
    "admin.error": ("変更できませんでした: {reason}", "Not changed: {reason}"),
    "admin.audit_heading": ("監査ログ（新しい順、最大100件）", "Audit log (newest first, up to 100)"),
    "admin.audit_when": ("日時", "When"),
    "admin.audit_who": ("誰が", "Who"),
    "admin.audit_action": ("操作", "Action"),
    "admin.audit_target": ("対象", "Target"),
    "admin.audit_detail": ("詳細", "Detail"),
    "admin.audit_ip": ("接続元", "From"),
    # ---- manager and integrator pages (dashboard/manager_pages.py, integrator_pages.py; MANAGER helper)
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
