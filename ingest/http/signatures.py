"""Webhook authentication: the `Vitals-Signature` HMAC (`sign` for partners and
tests, `parse_signature` + `SignatureHeader` for the streaming check,
`verify_signature` for a whole body) and a short-lived cache of providers'
decrypted webhook secrets."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass

from core.errors import InputError
from store import registry
from store.db import Pool, transaction

SIGNATURE_TOLERANCE_S = 300
SIGNATURE_HEADER = "Vitals-Signature"
PROVIDER_CACHE_TTL_S = 30.0
SIGNATURE_MISMATCH = "signature does not match"


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
