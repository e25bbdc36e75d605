"""Types of the Open mHealth bodies of the nine v1 types, per version.

Each TypedDict (validated by a pydantic TypeAdapter, see `schemas.omh`)
mirrors one schema file of the Open mHealth schemas (JSON Schema
draft-04/07, ``$ref``s resolved as the files name them: ``x-1.x.json`` is the
newest ``x-1.y.json``); the 4.0-era versions use the IEEE 1752.1 time frame.
Enumerations are `Literal`s, numbers are JSON numbers (never strings or
booleans, never NaN/Infinity), properties not named are allowed.

`BODIES` maps (schema name, version) to its type, anything else being an
unsupported type; `COMPONENTS` says where each type keeps its values and
`TIME_FRAME_REQUIRES` which branch of the time frame a version insists on.
"""

from __future__ import annotations

from typing import Final, Literal, NotRequired

from typing_extensions import TypedDict

from schemas.base import Id, Text, strict
from schemas.timeframe import TimeFrameIEEE, TimeFrameV1

# --- enumerations (schema file in the comment) ----------------------------
DescriptiveStatistic10 = Literal[  # descriptive-statistic-1.0
    "average", "maximum", "minimum", "standard deviation", "variance", "sum", "median"
]
DescriptiveStatistic = Literal[  # descriptive-statistic-1.2 (= 1.x) and IEEE 1.0
    "average", "count", "maximum", "median", "minimum", "standard deviation", "sum",
    "variance", "20th percentile", "80th percentile", "lower quartile", "upper quartile",
    "quartile deviation", "1st quintile", "2nd quintile", "3rd quintile", "4th quintile",
]  # fmt: skip
ToPhysicalActivity = Literal[  # temporal-relationship-to-physical-activity-1.0
    "at rest", "active", "before exercise", "after exercise", "during exercise"
]
ToSleep = Literal["before sleeping", "during sleep", "on waking"]  # ...-to-sleep-1.0
ToMeal = Literal[  # temporal-relationship-to-meal-1.2 (= 1.x)
    "fasting", "not fasting", "before meal", "after meal", "before breakfast",
    "after breakfast", "before lunch", "after lunch", "before dinner", "after dinner",
    "2 hours postprandial", "with meal", "with food",
]  # fmt: skip
BloodSpecimenType = Literal["whole blood", "plasma", "serum"]  # blood-specimen-type-1.0
SpecimenSource1 = Literal[  # specimen-source-1.0
    "interstitial fluid", "capillary blood", "plasma", "serum", "tears", "whole blood"
]
SpecimenSource2 = Literal[  # specimen-source-2.1 (= 2.x)
    "breath", "capillary blood", "interstitial fluid", "saliva", "sweat", "tears", "urine"
]
PositionDuringMeasurement = Literal["sitting", "lying down", "standing"]
BodyPosture = Literal["sitting", "lying down", "standing", "semi-recumbent"]  # omh 1.0, IEEE
BodyLocation = Literal[  # body-location-1.1 (= 1.x)
    "left ankle", "right ankle", "left hip", "right hip", "left thigh", "right thigh",
    "left thorax", "middle left thorax", "left upper arm", "right upper arm",
    "left wrist", "right wrist",
]  # fmt: skip
TemperatureLocation1 = Literal[  # body-temperature-1.0
    "oral", "rectal", "vaginal", "axillary", "otic", "wrist", "chest", "temporal"
]
TemperatureLocation2 = Literal[  # body-temperature-2.0 .. 4.0
    "axillary", "finger", "forehead", "oral", "rectal", "temporal artery", "toe",
    "tympanic", "wrist", "vagina",
]  # fmt: skip
MassUnit = Literal[  # mass-unit-value-1.x
    "fg", "pg", "ng", "ug", "mg", "g", "kg", "Metric Ton", "gr", "oz", "lb", "Ton"
]
PositioningSystem = Literal["GPS", "GLONASS", "Galileo", "Beidou", "COMPASS", "IRNSS", "QZSS"]


# --- unit values (unit-value-1.x / IEEE unit-value-1.0, narrowed) ----------
@strict
class HeartRateValue(TypedDict):
    value: float
    unit: Literal["beats/min"]


@strict
class MmHgValue(TypedDict):  # systolic/diastolic-blood-pressure-1.x
    value: float
    unit: Literal["mmHg"]


@strict
class GlucoseValue(TypedDict):
    value: float
    unit: Literal["mg/dL", "mmol/L"]


@strict
class MassValue(TypedDict):
    value: float
    unit: MassUnit


@strict
class TemperatureValue(TypedDict):  # temperature-unit-value-1.x / IEEE
    value: float
    unit: Literal["K", "F", "C"]


@strict
class PercentValue(TypedDict):
    value: float
    unit: Literal["%"]


@strict
class FlowRateValue(TypedDict):
    value: float
    unit: Literal["L/min"]


@strict
class BreathsValue(TypedDict):
    value: float
    unit: Literal["breaths/min"]


@strict
class StepsValue(TypedDict):
    value: float
    unit: Literal["steps"]


@strict
class PlaneAngleValue(TypedDict):  # plane-angle-unit-value-1.x
    value: float
    unit: Literal["deg"]


@strict
class ElevationValue(TypedDict):  # length-unit-value-1.x, narrowed to m/ft
    value: float
    unit: Literal["m", "ft"]


@strict
class SignalStrength(TypedDict):
    value: int
    unit: Literal["dB"]


# --- heart-rate --------------------------------------------------------------
@strict
class _HeartRate(TypedDict):
    heart_rate: HeartRateValue
    descriptive_statistic: NotRequired[DescriptiveStatistic]
    temporal_relationship_to_physical_activity: NotRequired[ToPhysicalActivity]


@strict
class HeartRate10(_HeartRate):
    effective_time_frame: NotRequired[TimeFrameV1]
    user_notes: NotRequired[Text]


@strict
class HeartRate11(HeartRate10):
    temporal_relationship_to_sleep: NotRequired[ToSleep]


@strict
class HeartRate20(_HeartRate):
    effective_time_frame: TimeFrameV1
    temporal_relationship_to_sleep: NotRequired[ToSleep]


# --- blood-pressure ------------------------------------------------------------
@strict
class _BloodPressure(TypedDict):
    systolic_blood_pressure: MmHgValue
    diastolic_blood_pressure: MmHgValue
    descriptive_statistic: NotRequired[DescriptiveStatistic]


@strict
class BloodPressure10(_BloodPressure):
    effective_time_frame: NotRequired[TimeFrameV1]
    position_during_measurement: NotRequired[PositionDuringMeasurement]
    user_notes: NotRequired[Text]


@strict
class BloodPressure20(_BloodPressure):
    effective_time_frame: NotRequired[TimeFrameV1]
    body_posture: NotRequired[BodyPosture]
    user_notes: NotRequired[Text]


@strict
class _BloodPressure3(_BloodPressure):
    body_posture: NotRequired[BodyPosture]
    measurement_location: NotRequired[BodyLocation]


@strict
class BloodPressure30(_BloodPressure3):
    effective_time_frame: TimeFrameV1


@strict
class BloodPressure31(_BloodPressure3):
    effective_time_frame: TimeFrameV1
    temporal_relationship_to_physical_activity: NotRequired[ToPhysicalActivity]


@strict
class BloodPressure40(_BloodPressure3):
    effective_time_frame: TimeFrameIEEE
    temporal_relationship_to_physical_activity: NotRequired[ToPhysicalActivity]


# --- blood-glucose -------------------------------------------------------------
@strict
class _BloodGlucose(TypedDict):
    blood_glucose: GlucoseValue
    temporal_relationship_to_meal: NotRequired[ToMeal]
    temporal_relationship_to_sleep: NotRequired[ToSleep]
    descriptive_statistic: NotRequired[DescriptiveStatistic]


@strict
class BloodGlucose10(_BloodGlucose):
    blood_specimen_type: NotRequired[BloodSpecimenType]
    effective_time_frame: NotRequired[TimeFrameV1]
    user_notes: NotRequired[Text]


@strict
class BloodGlucose20(_BloodGlucose):
    specimen_source: NotRequired[SpecimenSource1]
    effective_time_frame: NotRequired[TimeFrameV1]
    user_notes: NotRequired[Text]


@strict
class BloodGlucose30(_BloodGlucose):
    specimen_source: NotRequired[SpecimenSource2]
    effective_time_frame: TimeFrameV1


@strict
class BloodGlucose40(_BloodGlucose):
    specimen_source: NotRequired[SpecimenSource2]
    effective_time_frame: TimeFrameIEEE


# --- body-weight ---------------------------------------------------------------
@strict
class _BodyWeight(TypedDict):
    body_weight: MassValue
    descriptive_statistic: NotRequired[DescriptiveStatistic]


@strict
class BodyWeight10(_BodyWeight):
    effective_time_frame: NotRequired[TimeFrameV1]


@strict
class BodyWeight20(_BodyWeight):
    effective_time_frame: TimeFrameV1


@strict
class BodyWeight30(_BodyWeight):
    effective_time_frame: TimeFrameIEEE


# --- body-temperature ----------------------------------------------------------
@strict
class _BodyTemperature(TypedDict):
    body_temperature: TemperatureValue
    descriptive_statistic: NotRequired[DescriptiveStatistic]


@strict
class BodyTemperature10(_BodyTemperature):
    effective_time_frame: NotRequired[TimeFrameV1]
    measurement_location: NotRequired[TemperatureLocation1]


@strict
class _BodyTemperature2(_BodyTemperature):
    measurement_location: NotRequired[TemperatureLocation2]
    temporal_relationship_to_sleep: NotRequired[ToSleep]


@strict
class BodyTemperature20(_BodyTemperature2):
    effective_time_frame: NotRequired[TimeFrameV1]


@strict
class BodyTemperature30(_BodyTemperature2):
    effective_time_frame: TimeFrameV1


@strict
class BodyTemperature40(_BodyTemperature2):
    effective_time_frame: TimeFrameIEEE


# --- oxygen-saturation ---------------------------------------------------------
@strict
class _OxygenSaturation(TypedDict):
    oxygen_saturation: PercentValue
    system: NotRequired[Literal["peripheral capillary"]]
    supplemental_oxygen_flow_rate: NotRequired[FlowRateValue]
    oxygen_therapy_mode_of_administration: NotRequired[Literal["nasal cannula"]]
    measurement_method: NotRequired[Literal["pulse oximetry"]]
    descriptive_statistic: NotRequired[DescriptiveStatistic]


@strict
class OxygenSaturation10(_OxygenSaturation):
    effective_time_frame: NotRequired[TimeFrameV1]


@strict
class OxygenSaturation20(_OxygenSaturation):
    effective_time_frame: TimeFrameV1


# --- respiratory-rate ----------------------------------------------------------
@strict
class _RespiratoryRate(TypedDict):
    respiratory_rate: BreathsValue
    descriptive_statistic: NotRequired[DescriptiveStatistic]
    temporal_relationship_to_physical_activity: NotRequired[ToPhysicalActivity]


@strict
class RespiratoryRate10(_RespiratoryRate):
    effective_time_frame: NotRequired[TimeFrameV1]


@strict
class RespiratoryRate20(_RespiratoryRate):
    effective_time_frame: TimeFrameV1


# --- step-count (1.0/2.0: a bare number of steps) ------------------------------
@strict
class StepCount10(TypedDict):
    step_count: float
    effective_time_frame: NotRequired[TimeFrameV1]


@strict
class _StepCount2(TypedDict):
    effective_time_frame: TimeFrameV1  # with time_interval, see TIME_FRAME_REQUIRES
    descriptive_statistic: NotRequired[DescriptiveStatistic10]
    descriptive_statistic_denominator: NotRequired[Id]  # anyOf(enum, string)


@strict
class StepCount20(_StepCount2):
    step_count: float


@strict
class StepCount30(_StepCount2):
    step_count: StepsValue


# --- geoposition ---------------------------------------------------------------
@strict
class Geoposition10(TypedDict):
    latitude: PlaneAngleValue
    longitude: PlaneAngleValue
    elevation: NotRequired[ElevationValue]
    effective_time_frame: TimeFrameV1  # with date_time, see TIME_FRAME_REQUIRES
    number_of_satellites_in_view: NotRequired[int]
    satellite_signal_strengths: NotRequired[list[SignalStrength]]
    number_of_satellites_in_fix: NotRequired[int]
    positioning_system: NotRequired[PositioningSystem]


BODIES: Final[dict[tuple[str, str], type]] = {
    ("heart-rate", "1.0"): HeartRate10,
    ("heart-rate", "1.1"): HeartRate11,
    ("heart-rate", "2.0"): HeartRate20,
    ("blood-pressure", "1.0"): BloodPressure10,
    ("blood-pressure", "2.0"): BloodPressure20,
    ("blood-pressure", "3.0"): BloodPressure30,
    ("blood-pressure", "3.1"): BloodPressure31,
    ("blood-pressure", "4.0"): BloodPressure40,
    ("blood-glucose", "1.0"): BloodGlucose10,
    ("blood-glucose", "2.0"): BloodGlucose20,
    ("blood-glucose", "3.0"): BloodGlucose30,
    ("blood-glucose", "4.0"): BloodGlucose40,
    ("body-weight", "1.0"): BodyWeight10,
    ("body-weight", "2.0"): BodyWeight20,
    ("body-weight", "3.0"): BodyWeight30,
    ("body-temperature", "1.0"): BodyTemperature10,
    ("body-temperature", "2.0"): BodyTemperature20,
    ("body-temperature", "3.0"): BodyTemperature30,
    ("body-temperature", "4.0"): BodyTemperature40,
    ("oxygen-saturation", "1.0"): OxygenSaturation10,
    ("oxygen-saturation", "2.0"): OxygenSaturation20,
    ("respiratory-rate", "1.0"): RespiratoryRate10,
    ("respiratory-rate", "2.0"): RespiratoryRate20,
    ("step-count", "1.0"): StepCount10,
    ("step-count", "2.0"): StepCount20,
    ("step-count", "3.0"): StepCount30,
    ("geoposition", "1.0"): Geoposition10,
}

# type -> (component, body key): the key holds a unit value, or a bare number
# of steps (step-count 1.0/2.0).
COMPONENTS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "heart-rate": (("heart_rate", "heart_rate"),),
    "blood-pressure": (
        ("systolic_blood_pressure", "systolic_blood_pressure"),
        ("diastolic_blood_pressure", "diastolic_blood_pressure"),
    ),
    "blood-glucose": (("blood_glucose", "blood_glucose"),),
    "body-weight": (("body_weight", "body_weight"),),
    "body-temperature": (("body_temperature", "body_temperature"),),
    "oxygen-saturation": (("oxygen_saturation", "oxygen_saturation"),),
    "respiratory-rate": (("respiratory_rate", "respiratory_rate"),),
    "step-count": (("step_count", "step_count"),),
    "geoposition": (("latitude", "latitude"), ("longitude", "longitude")),
}
UNITLESS_STEPS: Final = "{steps}"  # the unit recorded for a bare step count

TIME_FRAME_REQUIRES: Final[dict[tuple[str, str], str]] = {
    ("step-count", "2.0"): "time_interval",
    ("step-count", "3.0"): "time_interval",
    ("geoposition", "1.0"): "date_time",
}
