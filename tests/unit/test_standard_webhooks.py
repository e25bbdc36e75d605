"""The Standard Webhooks scheme without a server, checked against the
`standardwebhooks` package's own signer: one key in two forms
(`webhook_secret` bytes and `whsec_<base64>`), several signatures, the
±300 s tolerance, missing or malformed headers, and a replay under another id."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from core.crypto import standard_webhooks_secret
from ingest.http.signatures import (
    SIGNATURE_MISMATCH,
    SIGNATURE_TOLERANCE_S,
    SignatureHeader,
    StandardSignature,
    parse_auth,
    parse_standard,
    sign,
    sign_standard,
    verify,
)

SECRET = "whsec_unit-test-secret_-AZaz09"  # the shape `vitals provider add` prints
KEY = SECRET.encode()
BODY = b'[{"header": {"id": "a1"}, "body": {}}]'
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
MSG = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"


def theirs(msg_id: str = MSG, t: int = NOW, secret: str = SECRET) -> str:
    """`webhook-signature` as the reference implementation signs it."""
    wh = Webhook(standard_webhooks_secret(secret))
    return wh.sign(msg_id, datetime.fromtimestamp(t, UTC), BODY.decode())


def check(msg_id: str | None, t: str | None, sig: str | None, body: bytes = BODY) -> str | None:
    return verify(parse_standard(msg_id, t, sig, NOW), KEY, body)


def test_one_key_in_two_forms() -> None:
    whsec = standard_webhooks_secret(SECRET)
    assert whsec.startswith("whsec_")
    assert base64.b64decode(whsec.removeprefix("whsec_")) == KEY
    assert Webhook(whsec)._whsecret == KEY  # the package reads the same key


def test_the_reference_signer_is_accepted_and_ours_agrees() -> None:
    assert check(MSG, str(NOW), theirs()) is None
    ours = sign_standard(SECRET, MSG, BODY, NOW)
    assert ours == {"webhook-id": MSG, "webhook-timestamp": str(NOW), "webhook-signature": theirs()}
    # and the package verifies what we sign
    now = int(datetime.now(UTC).timestamp())
    headers = sign_standard(KEY, MSG, BODY, now)
    Webhook(standard_webhooks_secret(SECRET)).verify(BODY, headers)


def test_several_signatures_any_valid_one_accepts() -> None:
    other = theirs(secret="whsec_the-previous-secret")
    for sig in (f"{other} {theirs()}", f"{theirs()} {other}", f"v1a,AAAA {theirs()}"):
        assert check(MSG, str(NOW), sig) is None, sig
    assert check(MSG, str(NOW), other) == SIGNATURE_MISMATCH
    assert check(MSG, str(NOW), f"{other} v1,AAAA") == SIGNATURE_MISMATCH


def test_wrong_secret_body_or_id_does_not_match() -> None:
    assert check(MSG, str(NOW), theirs(secret="whsec_wrong")) == SIGNATURE_MISMATCH
    assert check(MSG, str(NOW), theirs(), BODY + b" ") == SIGNATURE_MISMATCH
    # a captured body and signature replayed under another id
    assert check("msg_other", str(NOW), theirs()) == SIGNATURE_MISMATCH
    # or another timestamp
    assert check(MSG, str(NOW + 1), theirs()) == SIGNATURE_MISMATCH


@pytest.mark.parametrize("skew", [0, SIGNATURE_TOLERANCE_S, -SIGNATURE_TOLERANCE_S])
def test_within_tolerance_is_accepted(skew: int) -> None:
    assert check(MSG, str(NOW + skew), theirs(t=NOW + skew)) is None


@pytest.mark.parametrize("skew", [SIGNATURE_TOLERANCE_S + 1, -SIGNATURE_TOLERANCE_S - 1])
def test_expired_or_future_timestamp_is_refused(skew: int) -> None:
    reason = check(MSG, str(NOW + skew), theirs(t=NOW + skew))
    assert reason is not None and f"{SIGNATURE_TOLERANCE_S} s" in reason


@pytest.mark.parametrize(
    ("msg_id", "t", "sig", "says"),
    [
        (None, str(NOW), "SIG", "missing webhook-id header"),
        (MSG, None, "SIG", "missing webhook-timestamp header"),
        (MSG, str(NOW), None, "missing webhook-signature header"),
        ("", "", "", "missing webhook-id, webhook-timestamp, webhook-signature headers"),
        (MSG, "abc", "SIG", "webhook-timestamp"),
        (MSG, "1.5", "SIG", "webhook-timestamp"),
        (MSG, "\u00b2", "SIG", "webhook-timestamp"),
        (MSG, "1" + "0" * 12, "SIG", "webhook-timestamp"),
        ("x" * 257, str(NOW), "SIG", "webhook-id"),
        ("caf\u00e9", str(NOW), "SIG", "webhook-id"),
        (MSG, str(NOW), "v1,", "webhook-signature"),
        (MSG, str(NOW), "v1,not base64!", "webhook-signature"),
        (MSG, str(NOW), "v2,AAAA", "webhook-signature"),
        (MSG, str(NOW), "garbage", "webhook-signature"),
    ],
)
def test_missing_or_malformed_headers_say_why(
    msg_id: str | None, t: str | None, sig: str | None, says: str
) -> None:
    sig = theirs() if sig == "SIG" else sig
    reason = check(msg_id, t, sig)
    assert reason is not None and says in reason


def test_the_streaming_check_equals_the_whole_body_check() -> None:
    parsed = parse_standard(MSG, str(NOW), theirs(), NOW)
    assert isinstance(parsed, StandardSignature)
    streamed = parsed.start(KEY)
    for i in range(0, len(BODY), 5):
        streamed.update(BODY[i : i + 5])
    assert parsed.matches(streamed)


def test_parse_auth_picks_the_scheme() -> None:
    vitals = sign(KEY, BODY, NOW)
    assert isinstance(parse_auth(vitals, None, None, None, NOW), SignatureHeader)
    assert isinstance(parse_auth(None, MSG, str(NOW), theirs(), NOW), StandardSignature)
    # Vitals-Signature wins when both are sent
    assert isinstance(parse_auth(vitals, MSG, str(NOW), theirs(), NOW), SignatureHeader)
    assert verify(parse_auth(vitals, None, None, None, NOW), KEY, BODY) is None
    # one webhook-* header alone selects Standard Webhooks and says what is missing
    reason = parse_auth(None, MSG, None, None, NOW)
    assert isinstance(reason, str) and "webhook-timestamp" in reason
    assert parse_auth(None, None, None, None, NOW) == "missing Vitals-Signature header"
