"""Physiological plausibility on canonical values (after unit normalisation).

A value outside these inclusive bounds cannot come from a living person (or
a place on Earth) and is refused with `implausible_value`:

| component                | canonical unit | min  | max     |
|--------------------------|----------------|------|---------|
| heart_rate               | /min           | 20   | 300     |
| systolic_blood_pressure  | mm[Hg]         | 40   | 300     |
| diastolic_blood_pressure | mm[Hg]         | 20   | 200     |
| blood_glucose            | mg/dL          | 10   | 2000    |
| body_weight              | kg             | 0.2  | 650     |
| body_temperature         | Cel            | 25   | 45      |
| oxygen_saturation        | %              | 30   | 100     |
| respiratory_rate         | /min           | 2    | 80      |
| step_count               | {steps}        | 0    | 200000  |
| latitude                 | deg            | -90  | 90      |
| longitude                | deg            | -180 | 180     |

Blood pressure also needs systolic > diastolic. The explanation returned
names the field and the allowed range, never the value that was sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from schemas.reading import Component

BOUNDS: Final[dict[str, tuple[float, float]]] = {
    "heart_rate": (20, 300),
    "systolic_blood_pressure": (40, 300),
    "diastolic_blood_pressure": (20, 200),
    "blood_glucose": (10, 2000),
    "body_weight": (0.2, 650),
    "body_temperature": (25, 45),
    "oxygen_saturation": (30, 100),
    "respiratory_rate": (2, 80),
    "step_count": (0, 200_000),
    "latitude": (-90, 90),
    "longitude": (-180, 180),
}


def implausibility(components: Sequence[Component]) -> str | None:
    """Why these components are physiologically impossible, or None if plausible.

    Blood pressure comes as (systolic, diastolic), in that order.
    """
    for c in components:
        lo, hi = BOUNDS[c.name]
        if not lo <= c.value <= hi:
            return f"{c.name} outside the plausible range {lo:g}..{hi:g} {c.unit}"
    if len(components) == 2 and components[0].name == "systolic_blood_pressure":
        systolic, diastolic = components
        if systolic.value <= diastolic.value:
            return "systolic_blood_pressure must be greater than diastolic_blood_pressure"
    return None
