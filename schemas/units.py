"""Unit normalisation: one canonical UCUM unit per component.

Both payload formats land here (Open mHealth spellings such as ``beats/min``
or ``lb`` and FHIR UCUM codes such as ``/min`` or ``[lb_av]``), so a value is
converted in exactly one place. The original value and unit are kept beside
the canonical ones in the `Component`.

| component | canonical | accepted units (factor to canonical) |
|---|---|---|
| heart_rate | /min | beats/min, /min, {beats}/min, {beat}/min |
| systolic/diastolic_bp | mm[Hg] | mmHg, mm[Hg]; kPa x7.50062 |
| blood_glucose | mg/dL | mg/dL (mg/dl); mmol/L (mmol/l) x18.0156 |
| body_weight | kg | fg..kg, Metric Ton/t, gr, oz, lb, Ton (short), exact |
| body_temperature | Cel | C, Cel; F, [degF] (x-32)*5/9; K x-273.15 |
| oxygen_saturation | % | % |
| respiratory_rate | /min | breaths/min, /min, {breaths}/min, {breath}/min |
| step_count | {steps} | steps, {steps}, {step}, /(24.h), {steps}/d |
| latitude, longitude | deg | deg |

Which units a payload may use at all is decided by its schema (the OMH
models are stricter than this table); this table only says how to convert.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

from schemas.reading import Component

CANONICAL: Final[dict[str, str]] = {
    "heart_rate": "/min",
    "systolic_blood_pressure": "mm[Hg]",
    "diastolic_blood_pressure": "mm[Hg]",
    "blood_glucose": "mg/dL",
    "body_weight": "kg",
    "body_temperature": "Cel",
    "oxygen_saturation": "%",
    "respiratory_rate": "/min",
    "step_count": "{steps}",
    "latitude": "deg",
    "longitude": "deg",
}

# mmHg per kPa, and mg/dL per mmol/L of glucose (molar mass 180.156 g/mol).
MMHG_PER_KPA: Final = 7.50062
GLUCOSE_MGDL_PER_MMOLL: Final = 18.0156

_LB: Final = 0.45359237  # kg, exact (international avoirdupois pound)

_MASS_KG: Final[dict[str, float]] = {
    "fg": 1e-18,
    "pg": 1e-15,
    "ng": 1e-12,
    "ug": 1e-9,
    "mg": 1e-6,
    "g": 1e-3,
    "kg": 1.0,
    "Metric Ton": 1000.0,
    "t": 1000.0,
    "gr": 64.79891e-6,  # grain, exact
    "[gr]": 64.79891e-6,
    "oz": _LB / 16,  # avoirdupois ounce, exact
    "[oz_av]": _LB / 16,
    "lb": _LB,
    "[lb_av]": _LB,
    "Ton": 2000 * _LB,  # short ton, exact
    "[ston_av]": 2000 * _LB,
}

_PER_MIN_BEATS: Final = ("beats/min", "/min", "{beats}/min", "{beat}/min")
_PER_MIN_BREATHS: Final = ("breaths/min", "/min", "{breaths}/min", "{breath}/min")
_MMHG: Final = ("mmHg", "mm[Hg]")
_STEPS: Final = ("steps", "{steps}", "{step}", "/(24.h)", "{steps}/d")


def _scale(factor: float) -> Callable[[float], float]:
    if factor == 1.0:
        return lambda x: x
    return lambda x: x * factor


def _f_to_cel(x: float) -> float:
    return (x - 32.0) * 5.0 / 9.0


def _k_to_cel(x: float) -> float:
    return x - 273.15


_IDENTITY: Final = _scale(1.0)

# component -> unit as sent -> conversion to the canonical unit
CONVERSIONS: Final[dict[str, dict[str, Callable[[float], float]]]] = {
    "heart_rate": dict.fromkeys(_PER_MIN_BEATS, _IDENTITY),
    "systolic_blood_pressure": {**dict.fromkeys(_MMHG, _IDENTITY), "kPa": _scale(MMHG_PER_KPA)},
    "diastolic_blood_pressure": {**dict.fromkeys(_MMHG, _IDENTITY), "kPa": _scale(MMHG_PER_KPA)},
    "blood_glucose": {
        "mg/dL": _IDENTITY,
        "mg/dl": _IDENTITY,
        "mmol/L": _scale(GLUCOSE_MGDL_PER_MMOLL),
        "mmol/l": _scale(GLUCOSE_MGDL_PER_MMOLL),
    },
    "body_weight": {unit: _scale(f) for unit, f in _MASS_KG.items()},
    "body_temperature": {
        "C": _IDENTITY,
        "Cel": _IDENTITY,
        "F": _f_to_cel,
        "[degF]": _f_to_cel,
        "K": _k_to_cel,
    },
    "oxygen_saturation": {"%": _IDENTITY},
    "respiratory_rate": dict.fromkeys(_PER_MIN_BREATHS, _IDENTITY),
    "step_count": dict.fromkeys(_STEPS, _IDENTITY),
    "latitude": {"deg": _IDENTITY},
    "longitude": {"deg": _IDENTITY},
}


class UnitError(ValueError):
    """The unit is not one this component can be converted from."""


def make_component(name: str, value: float, unit: str) -> Component:
    """Convert `value` in `unit` to the canonical unit of component `name`.

    Raises `UnitError` for a unit without a known conversion, or a value that
    is not a finite number after conversion. Messages never contain the value.
    """
    convert = CONVERSIONS[name].get(unit)
    if convert is None:
        raise UnitError(f"{name}: unit not accepted (use {CANONICAL[name]})")
    canonical = float(convert(value))
    if not math.isfinite(canonical):
        raise UnitError(f"{name}: value must be a finite number")
    return Component(name, canonical, CANONICAL[name], float(value), unit)
