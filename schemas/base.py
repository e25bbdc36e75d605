"""What every payload type shares: strict JSON typing and value-free errors."""

from __future__ import annotations

from typing import Annotated, Final, TypeVar

from pydantic import ConfigDict, StringConstraints, ValidationError, with_config

# JSON types exactly as the schemas say them: no coercion ("6000" is not a
# number, true is not a number), no NaN/Infinity. Properties a schema does
# not name are allowed, as the Open mHealth schemas allow them, and dropped.
# Payload types are TypedDicts validated by pydantic TypeAdapters: absent
# optional keys stay absent and an explicit null is refused, as in JSON Schema.
CONFIG: Final = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)

# Every string a payload model parses has a bound (a 2 MB source_name is not a
# data point): identifiers and codes up to MAX_ID characters, free text up to
# MAX_TEXT. Longer is `invalid_schema` ("<field>: too long").
MAX_ID: Final = 256
MAX_TEXT: Final = 4096
Id = Annotated[str, StringConstraints(max_length=MAX_ID)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]

T = TypeVar("T")


def strict(cls: type[T]) -> type[T]:
    """Class decorator: apply `CONFIG` to a TypedDict."""
    return with_config(CONFIG)(cls)


# Short, value-free wording of pydantic error types (the input is never echoed).
_WORDING: Final[dict[str, str]] = {
    "missing": "required",
    "literal_error": "not an allowed value",
    "float_type": "must be a number",
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "dict_type": "must be an object",
    "list_type": "must be an array",
    "finite_number": "must be a finite number",
    "string_pattern_mismatch": "malformed",
    "string_too_short": "must not be empty",
    "string_too_long": "too long",
    "datetime_from_date_parsing": "not a valid date-time",
    "datetime_parsing": "not a valid date-time",
    "date_from_datetime_parsing": "not a valid date",
    "date_parsing": "not a valid date",
}


def describe(exc: ValidationError, prefix: str = "") -> str:
    """Which field is wrong and why, from the first error, without its value."""
    err = exc.errors(include_url=False, include_input=False, include_context=True)[0]
    where = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    why = _WORDING.get(err["type"], "invalid")
    expected = (err.get("ctx") or {}).get("expected")
    if err["type"] == "literal_error" and isinstance(expected, str) and len(expected) <= 120:
        why += f" (allowed: {expected})"  # the schema's own enumeration
    return f"{where or 'value'}: {why}"
