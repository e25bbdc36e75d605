"""Webhook authentication: the `Vitals-Signature` HMAC (`sign` for partners and
tests, `parse_signature` + `SignatureHeader` for the streaming check,
`verify_signature` for a whole body), the Standard Webhooks scheme
(`sign_standard`, `parse_standard` + `StandardSignature`), `parse_auth` which
picks the scheme a request uses, and a short-lived cache of providers'
decrypted webhook secrets.

Both schemes use one HMAC-SHA256 key per provider: the UTF-8 bytes of its
`webhook_secret`, whose Standard Webhooks form is `standard_webhooks_secret`
(`whsec_` + base64 of those bytes, `core.crypto.standard_webhooks_secret`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from core.errors import InputError
from store import registry
from store.db import Pool, transaction

SIGNATURE_TOLERANCE_S = 300
SIGNATURE_HEADER = "Vitals-Signature"
PROVIDER_CACHE_TTL_S = 30.0
SIGNATURE_MISMATCH = "signature does not match"
# Standard Webhooks (https://www.standardwebhooks.com/)
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
MAX_WEBHOOK_ID = 256
MAX_STANDARD_SIGNATURES = 16


# Signatures -------------------------------------------------------------------


def sign(secret: bytes | str, body: bytes, t: int | None = None) -> str:
    """The `Vitals-Signature` header value a partner sends for `body`."""
    key = secret.encode() if isinstance(secret, str) else secret
    t = int(time.time()) if t is None else t
    mac = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


@dataclass(frozen=True, slots=True)
class SignatureHeader:
    """A parsed `Vitals-Signature`: its timestamp and the v1 MACs to compare."""

    t: int
    candidates: tuple[str, ...]

    def start(self, secret: bytes) -> hmac.HMAC:
        """An HMAC over `f"{t}."`, to be fed the body as it streams in."""
        return hmac.new(secret, f"{self.t}.".encode(), hashlib.sha256)

    def matches(self, mac: hmac.HMAC) -> bool:
        expected = mac.hexdigest().encode()
        ok = False
        for candidate in self.candidates:  # compare every one: no early exit on a match
            ok |= hmac.compare_digest(expected, candidate.encode("ascii", "replace"))
        return ok


def _ascii_digits(value: str) -> bool:
    # str.isdigit() is true for "²" or "٣", which int() refuses: ASCII digits only.
    return value.isascii() and value.isdigit()


def parse_signature(header: str | None, now: float) -> SignatureHeader | str:
    """The parsed header when well formed and within tolerance; else why not.

    Needs no body and no secret, so a request is refused before its body is read.
    """
    if not header:
        return f"missing {SIGNATURE_HEADER} header"
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and _ascii_digits(value) and len(value) <= 12:
            t = int(value)
        elif key == "v1" and value:
            candidates.append(value.strip().lower())
    if t is None or not candidates:
        return f"{SIGNATURE_HEADER} must look like t=UNIX_SECONDS,v1=HEX"
    if abs(now - t) > SIGNATURE_TOLERANCE_S:
        return f"signature timestamp is more than {SIGNATURE_TOLERANCE_S} s from server time"
    return SignatureHeader(t, tuple(candidates))


def verify_signature(header: str | None, secret: bytes, body: bytes, now: float) -> str | None:
    """None when the header signs `body` with `secret` within tolerance; else why not."""
    parsed = parse_signature(header, now)
    if isinstance(parsed, str):
        return parsed
    mac = parsed.start(secret)
    mac.update(body)
    return None if parsed.matches(mac) else SIGNATURE_MISMATCH


class Signature(Protocol):
    """A parsed signature header of either scheme, checked while the body streams."""

    def start(self, secret: bytes) -> hmac.HMAC: ...

    def matches(self, mac: hmac.HMAC) -> bool: ...


# Standard Webhooks -------------------------------------------------------------


def sign_standard(
    secret: bytes | str, msg_id: str, body: bytes, t: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers a partner sends for `body`; `secret`
    is the provider's `webhook_secret` (the HMAC key bytes, as for `sign`)."""
    key = secret.encode() if isinstance(secret, str) else secret
    t = int(time.time()) if t is None else t
    mac = hmac.new(key, f"{msg_id}.{t}.".encode() + body, hashlib.sha256).digest()
    return {
        WEBHOOK_ID_HEADER: msg_id,
        WEBHOOK_TIMESTAMP_HEADER: str(t),
        WEBHOOK_SIGNATURE_HEADER: "v1," + base64.b64encode(mac).decode("ascii"),
    }


@dataclass(frozen=True, slots=True)
class StandardSignature:
    """Parsed Standard Webhooks headers: message id, timestamp, v1 MACs (raw bytes)."""

    msg_id: str
    t: int
    candidates: tuple[bytes, ...]

    def start(self, secret: bytes) -> hmac.HMAC:
        """An HMAC over `f"{id}.{timestamp}."`, to be fed the body as it streams in."""
        return hmac.new(secret, f"{self.msg_id}.{self.t}.".encode(), hashlib.sha256)

    def matches(self, mac: hmac.HMAC) -> bool:
        expected = mac.digest()
        ok = False
        for candidate in self.candidates:  # compare every one: no early exit on a match
            ok |= hmac.compare_digest(expected, candidate)
        return ok


def parse_standard(
    msg_id: str | None, timestamp: str | None, signature: str | None, now: float
) -> StandardSignature | str:
    """The parsed Standard Webhooks headers when well formed and within
    tolerance; else why not. `webhook-signature` holds space-separated
    `v1,<base64>` entries; other versions (e.g. `v1a`, asymmetric) are ignored."""
    missing = [
        name
        for name, value in (
            (WEBHOOK_ID_HEADER, msg_id),
            (WEBHOOK_TIMESTAMP_HEADER, timestamp),
            (WEBHOOK_SIGNATURE_HEADER, signature),
        )
        if not value
    ]
    if missing:
        return "missing " + ", ".join(missing) + " header" + ("s" if len(missing) > 1 else "")
    assert msg_id is not None and timestamp is not None and signature is not None
    if len(msg_id) > MAX_WEBHOOK_ID or not (msg_id.isascii() and msg_id.isprintable()):
        return f"{WEBHOOK_ID_HEADER} must be printable ASCII of at most {MAX_WEBHOOK_ID} characters"
    if not (_ascii_digits(timestamp) and len(timestamp) <= 12):
        return f"{WEBHOOK_TIMESTAMP_HEADER} must be UNIX_SECONDS"
    candidates: list[bytes] = []
    for entry in signature.split()[:MAX_STANDARD_SIGNATURES]:
        version, _, value = entry.partition(",")
        if version != "v1" or not value:
            continue
        try:
            candidates.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not candidates:
        return f"{WEBHOOK_SIGNATURE_HEADER} must hold v1,BASE64 signatures"
    t = int(timestamp)
    if abs(now - t) > SIGNATURE_TOLERANCE_S:
        return f"signature timestamp is more than {SIGNATURE_TOLERANCE_S} s from server time"
    return StandardSignature(msg_id, t, tuple(candidates))


def parse_auth(
    vitals_signature: str | None,
    msg_id: str | None,
    timestamp: str | None,
    signature: str | None,
    now: float,
) -> Signature | str:
    """The scheme a request uses: `Vitals-Signature` when present, else Standard
    Webhooks when any `webhook-*` header is present; else why it is refused."""
    if vitals_signature is None and (msg_id or timestamp or signature):
        return parse_standard(msg_id, timestamp, signature, now)
    return parse_signature(vitals_signature, now)


def verify(parsed: Signature | str, secret: bytes, body: bytes) -> str | None:
    """None when `parsed` (from `parse_auth`) signs `body` with `secret`; else why not."""
    if isinstance(parsed, str):
        return parsed
    mac = parsed.start(secret)
    mac.update(body)
    return None if parsed.matches(mac) else SIGNATURE_MISMATCH


# Provider secrets, cached briefly ----------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderAuth:
    provider_id: str
    active: bool
    secret: bytes


class ProviderCache:
    """provider id → decrypted webhook secret and status, for `ttl` seconds.

    Saves a database round trip per request; a suspension made elsewhere is
    seen within `ttl` (and the writer's transaction refuses readings of a
    non-active provider regardless).
    """

    def __init__(self, pool: Pool, master: bytes, ttl: float) -> None:
        self.pool = pool
        self.master = master
        self.ttl = ttl
        self._entries: dict[str, tuple[float, ProviderAuth]] = {}
        self._lock = threading.Lock()

    def cached(self, provider_id: str) -> ProviderAuth | None:
        """A fresh cache entry, without touching the database."""
        with self._lock:
            hit = self._entries.get(provider_id)
        return hit[1] if hit and hit[0] > time.monotonic() else None

    def get(self, provider_id: str) -> ProviderAuth | None:
        """Raises StorageUnavailable when a lookup is needed and the database is down."""
        now = time.monotonic()
        hit = self.cached(provider_id)
        if hit is not None:
            return hit
        if not _looks_like_uuid(provider_id):
            return None
        with transaction(self.pool) as conn:
            row = registry.get_provider(conn, provider_id)
        if row is None:
            return None
        auth = ProviderAuth(
            str(row["provider_id"]),
            row["status"] == "active",
            registry.webhook_secret(self.master, row),
        )
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[provider_id] = (now + self.ttl, auth)
        return auth

    def invalidate(self, provider_id: str | None = None) -> None:
        with self._lock:
            if provider_id is None:
                self._entries.clear()
            else:
                self._entries.pop(provider_id, None)


def _looks_like_uuid(value: str) -> bool:
    if len(value) > 64:
        return False
    try:
        registry.parse_uuid(value, "provider")
    except InputError:
        return False
    return True
