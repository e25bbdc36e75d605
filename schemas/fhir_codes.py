"""The codes a FHIR Observation may carry for the nine types: LOINC and IEEE
11073-10101 (MDC). Pure data; `schemas.fhir` reads it, the README lists it.

An Observation's type is decided by the first coding of ``Observation.code``
whose (system, code) appears here, in `CODES` (a type) or in `NOT_READINGS`
(a known near miss, refused as ``unsupported_type``); codings we do not know
are skipped. The blood-pressure panels take their values from components
coded in `BP_COMPONENTS`.
"""

from __future__ import annotations

from typing import Final

LOINC_SYSTEM: Final = "http://loinc.org"
MDC_SYSTEM: Final = "urn:iso:std:iso:11073:10101"
UCUM_SYSTEM: Final = "http://unitsofmeasure.org"
BLOOD_PRESSURE: Final = "blood-pressure"
SYSTOLIC: Final = "systolic_blood_pressure"
DIASTOLIC: Final = "diastolic_blood_pressure"

# (system, code) -> (type, component); the panels' component is None (read from
# Observation.component). Meaning in the comment (LOINC long name / MDC reference id).
CODES: Final[dict[tuple[str, str], tuple[str, str | None]]] = {
    # heart-rate
    (LOINC_SYSTEM, "8867-4"): ("heart-rate", "heart_rate"),  # Heart rate
    (LOINC_SYSTEM, "8889-8"): ("heart-rate", "heart_rate"),  # Heart rate by Pulse oximetry
    (MDC_SYSTEM, "147842"): ("heart-rate", "heart_rate"),  # MDC_ECG_HEART_RATE
    (MDC_SYSTEM, "149530"): ("heart-rate", "heart_rate"),  # MDC_PULS_OXIM_PULS_RATE
    (MDC_SYSTEM, "149546"): ("heart-rate", "heart_rate"),  # MDC_PULS_RATE_NON_INV
    # blood-pressure (panels)
    (LOINC_SYSTEM, "85354-9"): (BLOOD_PRESSURE, None),  # BP panel with all children optional
    (LOINC_SYSTEM, "55284-4"): (BLOOD_PRESSURE, None),  # BP systolic and diastolic (older)
    (MDC_SYSTEM, "150020"): (BLOOD_PRESSURE, None),  # MDC_PRESS_BLD_NONINV
    # blood-glucose
    (LOINC_SYSTEM, "2339-0"): ("blood-glucose", "blood_glucose"),  # Glucose [Mass/vol] Blood
    (LOINC_SYSTEM, "15074-8"): ("blood-glucose", "blood_glucose"),  # Glucose [Moles/vol] Blood
    (LOINC_SYSTEM, "2345-7"): ("blood-glucose", "blood_glucose"),  # ... Serum or Plasma
    (LOINC_SYSTEM, "14749-6"): ("blood-glucose", "blood_glucose"),  # [Moles/vol] Serum/Plasma
    (LOINC_SYSTEM, "41653-7"): ("blood-glucose", "blood_glucose"),  # Capillary, Glucometer
    (LOINC_SYSTEM, "14743-9"): ("blood-glucose", "blood_glucose"),  # [Moles/vol] Capillary
    (MDC_SYSTEM, "160184"): ("blood-glucose", "blood_glucose"),  # MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD
    (MDC_SYSTEM, "160188"): ("blood-glucose", "blood_glucose"),  # MDC_CONC_GLU_CAPILLARY_PLASMA
    (MDC_SYSTEM, "160192"): ("blood-glucose", "blood_glucose"),  # MDC_CONC_GLU_VENOUS_WHOLEBLOOD
    (MDC_SYSTEM, "160196"): ("blood-glucose", "blood_glucose"),  # MDC_CONC_GLU_VENOUS_PLASMA
    (MDC_SYSTEM, "160200"): ("blood-glucose", "blood_glucose"),  # MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD
    (MDC_SYSTEM, "160204"): ("blood-glucose", "blood_glucose"),  # MDC_CONC_GLU_ARTERIAL_PLASMA
    (MDC_SYSTEM, "160364"): ("blood-glucose", "blood_glucose"),  # ..._UNDETERMINED_WHOLEBLOOD
    (MDC_SYSTEM, "160368"): ("blood-glucose", "blood_glucose"),  # ..._UNDETERMINED_PLASMA
    # body-weight
    (LOINC_SYSTEM, "29463-7"): ("body-weight", "body_weight"),  # Body weight
    (LOINC_SYSTEM, "3141-9"): ("body-weight", "body_weight"),  # Body weight Measured
    (MDC_SYSTEM, "188736"): ("body-weight", "body_weight"),  # MDC_MASS_BODY_ACTUAL
    # body-temperature
    (LOINC_SYSTEM, "8310-5"): ("body-temperature", "body_temperature"),  # Body temperature
    (LOINC_SYSTEM, "8331-1"): ("body-temperature", "body_temperature"),  # Oral temperature
    (MDC_SYSTEM, "150364"): ("body-temperature", "body_temperature"),  # MDC_TEMP_BODY
    # oxygen-saturation
    (LOINC_SYSTEM, "59408-5"): ("oxygen-saturation", "oxygen_saturation"),  # SaO2 by oximetry
    (LOINC_SYSTEM, "2708-6"): ("oxygen-saturation", "oxygen_saturation"),  # SaO2 arterial
    (MDC_SYSTEM, "150456"): ("oxygen-saturation", "oxygen_saturation"),  # MDC_PULS_OXIM_SAT_O2
    # respiratory-rate
    (LOINC_SYSTEM, "9279-1"): ("respiratory-rate", "respiratory_rate"),  # Respiratory rate
    (MDC_SYSTEM, "151562"): ("respiratory-rate", "respiratory_rate"),  # MDC_RESP_RATE
    # step-count
    (LOINC_SYSTEM, "41950-7"): ("step-count", "step_count"),  # Number of steps in 24 hours
    (LOINC_SYSTEM, "55423-8"): ("step-count", "step_count"),  # Number of steps, pedometer
}

# Components of the blood-pressure panels.
BP_COMPONENTS: Final[dict[tuple[str, str], str]] = {
    (LOINC_SYSTEM, "8480-6"): SYSTOLIC,  # Systolic blood pressure
    (LOINC_SYSTEM, "8462-4"): DIASTOLIC,  # Diastolic blood pressure
    (MDC_SYSTEM, "150021"): SYSTOLIC,  # MDC_PRESS_BLD_NONINV_SYS
    (MDC_SYSTEM, "150022"): DIASTOLIC,  # MDC_PRESS_BLD_NONINV_DIA
}

# Near misses: codes that look like one of the nine but are not a measurement
# of it. Refused as unsupported_type with this detail (when one comes first).
NOT_READINGS: Final[dict[tuple[str, str], str]] = {
    (LOINC_SYSTEM, "96607-7"): "mean blood pressure over a period is not a reading",
    (LOINC_SYSTEM, "8478-0"): "mean arterial pressure is not the blood-pressure panel",
    (MDC_SYSTEM, "150320"): "pulse-oximeter signal quality is not a saturation",
    (MDC_SYSTEM, "150023"): "mean arterial pressure is not the blood-pressure panel",
}


def system_name(system: str) -> str:
    """`LOINC` or `MDC` for the README and refusal details."""
    return "MDC" if system == MDC_SYSTEM else "LOINC"
