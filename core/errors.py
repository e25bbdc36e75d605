"""The project's own exceptions, shared by every package.

Driver errors never travel past the store: it turns them into `StorageError`
or `StorageUnavailable`. A refused input is an `InputError` with a
machine-readable `code`; the transports map these to exit codes and statuses.
"""

from __future__ import annotations


class SettingsError(ValueError):
    """The configuration is unusable; the message says which variable and why."""


class DecryptionError(ValueError):
    """A secret could not be decrypted with this master key."""


class StorageError(Exception):
    """A database operation failed for a reason other than availability."""


class StorageUnavailable(StorageError):
    """The database cannot be reached now; nothing of the operation was stored."""


class MigrationError(RuntimeError):
    """A migration cannot be applied (e.g. an applied file changed since)."""


class InputError(ValueError):
    """A refused input: `code` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NotFound(InputError):
    def __init__(self, what: str, ident: object) -> None:
        super().__init__("not_found", f"{what} {ident} does not exist")
