"""Keys derived from the master key: secrets at rest, pseudonyms, keyed hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.errors import DecryptionError


def subkey(master: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose, so no two uses share key material."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"vitals/v1", info=purpose.encode()
    ).derive(master)


def partner_key(master: bytes, partner_id: str | uuid.UUID) -> bytes:
    """The pseudonym key of one partner, derived from the master key and never
    stored: `core.outputs.pseudonym(partner_key(...), subject)` names a person
    the same way in everything that partner receives (audiences, disclosures,
    notices), and differently for every other partner."""
    return subkey(master, f"partner-pseudonym:{uuid.UUID(str(partner_id))}")


def _fernet(master: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(subkey(master, "secrets-at-rest")))


def encrypt(master: bytes, plaintext: str | bytes) -> bytes:
    data = plaintext.encode() if isinstance(plaintext, str) else plaintext
    return _fernet(master).encrypt(data)


def decrypt(master: bytes, token: bytes) -> bytes:
    try:
        return _fernet(master).decrypt(bytes(token))
    except InvalidToken as e:
        raise DecryptionError("secret does not decrypt under VITALS_SECRET_KEY") from e


def keyed_hash(master: bytes, purpose: str, value: str) -> str:
    """HMAC-SHA256 of value under a purpose subkey, hex."""
    return hmac.new(subkey(master, purpose), value.encode(), hashlib.sha256).hexdigest()


def token_hash(token: str) -> bytes:
    """Bearer tokens are random, so a plain SHA-256 is enough to store them."""
    return hashlib.sha256(token.encode()).digest()


def standard_webhooks_secret(webhook_secret: str | bytes) -> str:
    """The Standard Webhooks form (`whsec_<base64 of the key>`) of a provider's
    webhook secret. The HMAC key of both schemes is one and the same: the
    UTF-8 bytes of `webhook_secret` (which itself starts with `whsec_` but is
    used whole, as `Vitals-Signature` always has)."""
    key = webhook_secret.encode() if isinstance(webhook_secret, str) else webhook_secret
    return "whsec_" + base64.b64encode(key).decode("ascii")
