"""The `Vitals-Signature` HMAC without a server: sign and verify, the ±300 s
tolerance, malformed headers, several v1 signatures in one header, and the
streaming check the webhook uses (HMAC fed chunk by chunk)."""

from __future__ import annotations

import hashlib
import hmac
from typing import cast

import pytest

from ingest.http.signatures import (
    SIGNATURE_MISMATCH,
    SIGNATURE_TOLERANCE_S,
    ProviderCache,
    SignatureHeader,
    parse_signature,
    sign,
    verify_signature,
)
from store.db import Pool

SECRET = b"whsec_unit-test-secret"
BODY = b'[{"header": {"id": "a1"}, "body": {}}]'
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


def mac(secret: bytes, t: int, body: bytes) -> str:
    return hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_sign_is_hmac_sha256_of_t_dot_body() -> None:
    assert sign(SECRET, BODY, NOW) == f"t={NOW},v1={mac(SECRET, NOW, BODY)}"
    assert sign(SECRET.decode(), BODY, NOW) == sign(SECRET, BODY, NOW)  # str or bytes secret


def test_a_signed_body_verifies() -> None:
    assert verify_signature(sign(SECRET, BODY, NOW), SECRET, BODY, NOW) is None


@pytest.mark.parametrize(
    ("secret", "body"), [(b"another-secret", BODY), (SECRET, BODY + b" "), (SECRET, b"")]
)
def test_another_secret_or_body_does_not_match(secret: bytes, body: bytes) -> None:
    header = sign(SECRET, BODY, NOW)
    assert verify_signature(header, secret, body, NOW) == SIGNATURE_MISMATCH


@pytest.mark.parametrize("skew", [0, 1, SIGNATURE_TOLERANCE_S, -SIGNATURE_TOLERANCE_S])
def test_within_tolerance_is_accepted(skew: int) -> None:
    header = sign(SECRET, BODY, NOW + skew)
    assert verify_signature(header, SECRET, BODY, NOW) is None


@pytest.mark.parametrize("skew", [SIGNATURE_TOLERANCE_S + 1, -SIGNATURE_TOLERANCE_S - 1, 10**6])
def test_outside_tolerance_is_refused_before_the_mac(skew: int) -> None:
    reason = parse_signature(sign(SECRET, BODY, NOW + skew), NOW)
    assert isinstance(reason, str) and f"{SIGNATURE_TOLERANCE_S} s" in reason


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "v1=abc",  # no timestamp
        f"t={NOW}",  # no signature
        f"t={NOW},v1=",  # empty signature
        f"t=abc,v1={'0' * 64}",
        f"t=²{NOW},v1={'0' * 64}",  # digits int() refuses
        f"t=١٧٦٧٢٢٥٦٠٠,v1={'0' * 64}",  # Arabic-Indic digits
        f"t=1{'0' * 12},v1={'0' * 64}",  # 13 digits
        "garbage",
    ],
)
def test_missing_or_malformed_headers_say_why(header: str | None) -> None:
    reason = parse_signature(header, NOW)
    assert isinstance(reason, str) and reason
    assert verify_signature(header, SECRET, BODY, NOW) == reason


def test_several_signatures_any_one_matching_is_enough() -> None:
    right = mac(SECRET, NOW, BODY)
    rotated = mac(b"the-previous-secret", NOW, BODY)
    for header in (
        f"t={NOW},v1={rotated},v1={right}",
        f"t={NOW},v1={right},v1={rotated}",
        f"v1={right}, t={NOW}",  # order and spaces do not matter
        f"t={NOW},v1={right.upper()}",  # hex in either case
    ):
        assert verify_signature(header, SECRET, BODY, NOW) is None, header
    assert verify_signature(f"t={NOW},v1={rotated},v1=00", SECRET, BODY, NOW) == (
        SIGNATURE_MISMATCH
    )


def test_the_streaming_check_equals_the_whole_body_check() -> None:
    parsed = parse_signature(sign(SECRET, BODY, NOW), NOW)
    assert isinstance(parsed, SignatureHeader)
    assert parsed.t == NOW
    streamed = parsed.start(SECRET)
    for i in range(0, len(BODY), 7):
        streamed.update(BODY[i : i + 7])
    assert parsed.matches(streamed)
    tampered = parsed.start(SECRET)
    tampered.update(BODY[:-1])
    assert not parsed.matches(tampered)


def test_a_non_uuid_provider_id_is_unknown_without_a_database_lookup() -> None:
    cache = ProviderCache(cast(Pool, None), b"master", ttl=30.0)  # a lookup would fail
    assert cache.get("not-a-provider-id") is None
    assert cache.get("x" * 100) is None
    assert cache.cached("not-a-provider-id") is None
