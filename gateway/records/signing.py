"""Signed day heads of the nap-check records, pure (keys and values in, no I/O).

The hash chain (gateway/records/entries.py) finds an edited entry, but someone holding the database
file can rewrite the tail and re-hash it consistently. So at the end of every local day the gateway
signs the chain's head with the site's Ed25519 key, which is kept in a file outside the database
(nurserywatch/keys.py): a ``DayHead`` — site, day, time zone, the last entry's seq and hash, when,
and which key. ``check_heads`` is what ``nurserywatch records verify`` does with them: every
signature against the public key, and every signed hash against the chain as it is now. A tail
rewritten after it was signed no longer matches; only someone with both the key and the file can
rewrite the records unnoticed (docs/records.md, "Signed day heads").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.records.entries import ChainHead, VerifyResult, canonical_json
from nurserywatch.contract import RecordsHead
from nurserywatch.keys import key_id

#: Bound into every signed message, so a signature made for anything else never passes as a day head.
DOMAIN = "nurserywatch.records.day_head.v1"
#: The private key's default file name (in the gateway's data folder); the public key is ``.pub``.
KEY_FILE = "records-signing.key"


@dataclass(frozen=True, slots=True)
class DayHead:
    """What the gateway signs: the chain's head when the local ``day`` had ended."""

    site: str
    #: The local date (``timezone``) that ended; the head covers every entry written until it was signed.
    day: str
    timezone: str
    seq: int
    hash: str
    #: Gateway clock, unix ms.
    signed_ts: int
    #: ``nurserywatch.keys.key_id`` of the signing key's public half.
    key_id: str

    def message(self) -> bytes:
        """The signed bytes: canonical JSON of every field and the domain."""
        return canonical_json({"domain": DOMAIN, **asdict(self)}).encode("utf-8")


@dataclass(frozen=True, slots=True)
class SignedHead:
    head: DayHead
    #: Ed25519 signature of ``head.message()``, hex.
    signature: str

    def to_json(self) -> str:
        """One line: canonical JSON of the head's fields and the signature (the stored form)."""
        return canonical_json({**asdict(self.head), "signature": self.signature})

    @classmethod
    def from_json(cls, text: str) -> SignedHead:
        """Parse ``to_json``'s text; raises ValueError naming what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg})") from None
        types = {"site": str, "day": str, "timezone": str, "seq": int, "hash": str, "signed_ts": int,
                 "key_id": str, "signature": str}  # fmt: skip
        if not isinstance(data, dict) or set(data) != set(types):
            raise ValueError(f"expected the fields {', '.join(sorted(types))}")
        for name, kind in types.items():
            if not isinstance(data[name], kind) or isinstance(data[name], bool):
                raise ValueError(f"{name}: expected {kind.__name__}")
        signature = data.pop("signature")
        return cls(DayHead(**data), signature)

    def to_contract(self) -> RecordsHead:
        """The payload published on ``records/head`` (nurserywatch/contract.py)."""
        return RecordsHead(**asdict(self.head), signature=self.signature)

    @classmethod
    def from_contract(cls, payload: RecordsHead) -> SignedHead:
        """A published head back, to check with ``signature_ok`` (the centre holds the public key)."""
        return cls(DayHead(**payload.model_dump(exclude={"signature"})), payload.signature)


def sign(key: Ed25519PrivateKey, head: DayHead) -> SignedHead:
    if head.key_id != key_id(key.public_key()):
        raise ValueError(f"the head names key {head.key_id}, not this key ({key_id(key.public_key())})")
    return SignedHead(head, key.sign(head.message()).hex())


def signature_ok(signed: SignedHead, public: Ed25519PublicKey) -> bool:
    try:
        public.verify(bytes.fromhex(signed.signature), signed.head.message())
    except (InvalidSignature, ValueError):
        return False
    return True


def local_day(ms: int, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(ms / 1000, tz).date()


def _midnight_ms(day: date, tz: ZoneInfo) -> int:
    return int(datetime.combine(day, time(), tz).timestamp() * 1000)


class DaySigner:
    """When the running gateway signs: at its first tick of each local day (and at its first tick
    after a start), if an entry written before the day began is not covered by a signed head yet.
    The head is then labelled with the day before — the day that ended — and covers every entry
    written until that tick. So a gateway stopped over midnight signs at its next start, and one
    restarted during the day signs nothing until the next midnight."""

    def __init__(self, key: Ed25519PrivateKey, site: str, tz: ZoneInfo, last: SignedHead | None) -> None:
        self._key = key
        self.site = site
        self.tz = tz
        self.key_id = key_id(key.public_key())
        self.last = last
        self._checked: date | None = None  # the local day whose signing is decided (done or not needed)

    def due(
        self, now_ms: int, head: Callable[[], ChainHead], oldest_after: Callable[[int], int | None]
    ) -> SignedHead | None:
        """The head to sign now, or None; call ``signed`` once it is stored. ``head()``: the chain's
        head; ``oldest_after(seq)``: the earliest time of the entries after ``seq`` (None: none).
        Both are asked at most once a day while nothing is due."""
        today = local_day(now_ms, self.tz)
        if self._checked == today:
            return None
        current = head()
        signed_upto = self.last.head.seq if self.last is not None else 0
        oldest = oldest_after(signed_upto) if current.seq > signed_upto else None
        if oldest is None or oldest >= _midnight_ms(today, self.tz):
            self._checked = today  # nothing unsigned from an earlier day: decided until tomorrow
            return None
        return self.sign(now_ms, current, today - timedelta(days=1))

    def sign(self, now_ms: int, head: ChainHead, day: date) -> SignedHead:
        """A signed head of ``day`` for the chain head ``head``, made now (also on request)."""
        return sign(self._key, DayHead(self.site, day.isoformat(), self.tz.key, head.seq, head.hash, now_ms,
                                       self.key_id))  # fmt: skip

    def signed(self, signed: SignedHead, now_ms: int) -> None:
        """``signed`` was stored: it is the latest, and today's signing is done."""
        self.last = signed
        self._checked = local_day(now_ms, self.tz)


@dataclass(frozen=True, slots=True)
class HeadsCheck:
    """What ``check_heads`` found. ``problem`` names the first bad head; None: every head holds."""

    checked: int
    #: The signed head with the highest seq that holds (entries after it are not yet signed).
    last: DayHead | None
    problem: str | None = None
    bad_seq: int | None = None
    #: Heads of entries retention has since deleted (their signatures are checked, their hashes cannot be).
    pruned: int = 0

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_heads(
    heads: Iterable[SignedHead],
    keys: Sequence[Ed25519PublicKey],
    chain: VerifyResult,
    first_seq: int,
    hash_at: Callable[[int], str | None],
    *,
    logged: Iterable[SignedHead] = (),
    log_name: str = "the heads file",
) -> HeadsCheck:
    """Check signed day heads against the public ``keys`` and an intact ``chain`` (verified first).

    ``heads`` are the database's; ``logged`` those of the append-only file beside the key, which
    the database's holder cannot reach: a head there but not in the database was removed from it.
    ``first_seq``: the first entry still in the file (after retention pruned the start);
    ``hash_at(seq)``: the stored hash of entry ``seq``. Stops at the first problem."""
    by_id = {key_id(k): k for k in keys}
    stored = {h.to_json(): h for h in heads}
    everything = {**stored, **{h.to_json(): h for h in logged}}
    checked = pruned = 0
    good: DayHead | None = None
    for text, signed in sorted(everything.items(), key=lambda kv: (kv[1].head.seq, kv[1].head.signed_ts)):
        h = signed.head
        problem = _problem(signed, by_id, chain, first_seq, hash_at, good)
        if problem is None and text not in stored:
            problem = f"signed head of {h.day} (entry {h.seq}) is in {log_name} but not in the database — removed"
        if problem is not None:
            return HeadsCheck(checked, good, problem, h.seq, pruned)
        checked += 1
        pruned += h.seq < first_seq
        if good is None or h.seq >= good.seq:
            good = h
    return HeadsCheck(checked, good, pruned=pruned)


def _problem(
    signed: SignedHead,
    by_id: Mapping[str, Ed25519PublicKey],
    chain: VerifyResult,
    first_seq: int,
    hash_at: Callable[[int], str | None],
    good: DayHead | None,
) -> str | None:
    """What is wrong with one signed head (None: it holds); ``good``: the last head that held."""
    h = signed.head
    public = by_id.get(h.key_id)
    what = f"signed head of {h.day} (entry {h.seq})"
    if public is None:
        return f"{what}: signed with key {h.key_id}, which is not the public key given ({', '.join(sorted(by_id))})"
    if not signature_ok(signed, public):
        return f"{what}: its signature does not match its content — altered or forged (key {h.key_id})"
    if h.seq < first_seq:
        return None  # its entries were pruned by retention: the signature is all there is to check
    if h.seq > chain.head.seq:
        return (f"entry {h.seq}: head of {h.day} signed as {h.hash}, but the chain now ends at entry "
                f"{chain.head.seq} — entries were cut off its end")  # fmt: skip
    now = hash_at(h.seq)
    if now == h.hash:
        return None
    since = good.seq + 1 if good is not None and good.seq >= first_seq else first_seq
    return (f"entry {h.seq}: head of {h.day} signed as {h.hash}, chain now {now} — an entry from {since} to "
            f"{h.seq} was rewritten and the chain re-hashed after it was signed (without the signing key)")  # fmt: skip
