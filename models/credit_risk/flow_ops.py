"""The transforms of a Data-Wrangler-style flow, applied with fitted state.

This module is self-contained on purpose (pandas and numpy only): `sagestack flow export` writes
its source, verbatim, into the standalone prep.py, and serving runs that prep.py. So training, the
exported file and the endpoint all run these very functions.

Every transform takes (frame, step, state) and returns a new frame. `step` is the step as the flow
file declares it; `state` is what fitting learned (category lists, scaler statistics).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


class FlowError(ValueError):
    """Data that a step cannot take; names the step, and the row and column where one is at fault."""

    status_code = 400  # a serving handler turns this into an HTTP 400


def _label(step: dict[str, Any]) -> str:
    return f"step {step['index']} ({step['type']})"


def _require(frame: pd.DataFrame, columns: list[str], step: dict[str, Any]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FlowError(f"{_label(step)}: missing column(s) {', '.join(repr(c) for c in missing)}")


def _row(frame: pd.DataFrame, position: int) -> int:
    return int(frame.index[position]) + 1


def _unknown(frame: pd.DataFrame, column: str, allowed: list[Any], step: dict[str, Any]) -> None:
    bad = ~frame[column].isin(allowed)
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        value = frame[column].iloc[pos]
        raise FlowError(
            f"{_label(step)}: row {_row(frame, pos)}, column '{column}': unknown category {value!r} "
            f"(known: {', '.join(map(str, allowed))})"
        )


def parse_as_type(frame: pd.DataFrame, step: dict[str, Any], state: dict[str, Any]) -> pd.DataFrame:
    _require(frame, step["columns"], step)
    out = frame.copy()
    for column in step["columns"]:
        values = pd.to_numeric(out[column], errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise FlowError(
                f"{_label(step)}: row {_row(out, pos)}, column '{column}': {out[column].iloc[pos]!r} is not a number"
            )
        out[column] = values.astype(step.get("to", "float64"))
    return out


def split_flatten(frame: pd.DataFrame, step: dict[str, Any], state: dict[str, Any]) -> pd.DataFrame:
    column, into = step["column"], step["into"]
    _require(frame, [column], step)
    parts = frame[column].astype(str).str.split(step["delimiter"], n=len(into) - 1, expand=True)
    if parts.shape[1] != len(into) or parts.isna().any().any():
        bad = int(np.flatnonzero(parts.isna().any(axis=1).to_numpy())[0]) if parts.isna().any().any() else 0
        raise FlowError(
            f"{_label(step)}: row {_row(frame, bad)}, column '{column}': expected {len(into)} parts "
            f"separated by {step['delimiter']!r}"
        )
    out = frame.copy()
    for i, name in enumerate(into):
        out[name] = parts[i].str.strip()
    return out


def rename(frame: pd.DataFrame, step: dict[str, Any], state: dict[str, Any]) -> pd.DataFrame:
    _require(frame, list(step["mapping"]), step)
    return frame.rename(columns=step["mapping"])


def ordinal_encode(frame: pd.DataFrame, step: dict[str, Any], state: dict[str, Any]) -> pd.DataFrame:
    column = step["column"]
    _require(frame, [column], step)
    categories = state["categories"]
    _unknown(frame, column, categories, step)
    out = frame.copy()
    out[step.get("output", column)] = frame[column].map({c: i for i, c in enumerate(categories)}).astype("int64")
    return out


def custom_map(frame: pd.DataFrame, step: dict[str, Any], state: dict[str, Any]) -> pd.DataFrame:
    column, mapping = step["column"], step["mapping"]
    _require(frame, [column], step)
    _unknown(frame, column, list(mapping), step)
    out = frame.copy()
    out[step.get("output", column)] = frame[column].map(mapping)
    return out


def one_hot(frame: pd.DataFrame, step: dict[str, Any], state: dict[str, Any]) -> pd.DataFrame:
    """Each listed column becomes one 0/1 column per fitted category, in the column's place."""
    _require(frame, step["columns"], step)
    for column in step["columns"]:
        _unknown(frame, column, state["categories"][column], step)
    pieces: dict[str, Any] = {}
    for name in frame.columns:
        if name in step["columns"]:
            values = frame[name].to_numpy()
            for category in state["categories"][name]:
                pieces[f"{name}_{category}"] = (values == category).astype("float64")
        else:
            pieces[name] = frame[name]
    return pd.DataFrame(pieces, index=frame.index)


def scale(frame: pd.DataFrame, step: dict[str, Any], state: dict[str, Any]) -> pd.DataFrame:
    _require(frame, step["columns"], step)
    out = frame.copy()
    for column in step["columns"]:
        center, spread = state["center"][column], state["spread"][column]
        out[column] = (out[column].astype("float64") - center) / (spread if spread else 1.0)
    return out


def drop(frame: pd.DataFrame, step: dict[str, Any], state: dict[str, Any]) -> pd.DataFrame:
    _require(frame, step["columns"], step)
    return frame.drop(columns=step["columns"])


def move_to_first(frame: pd.DataFrame, step: dict[str, Any], state: dict[str, Any]) -> pd.DataFrame:
    column = step["column"]
    _require(frame, [column], step)
    return frame[[column, *[c for c in frame.columns if c != column]]]


TRANSFORMS = {
    "parse_as_type": parse_as_type,
    "split_flatten": split_flatten,
    "rename": rename,
    "ordinal_encode": ordinal_encode,
    "custom_map": custom_map,
    "one_hot": one_hot,
    "scale": scale,
    "drop": drop,
    "move_to_first": move_to_first,
}


def apply_steps(frame: pd.DataFrame, fitted: list[dict[str, Any]], serving: bool = False) -> pd.DataFrame:
    """Run fitted steps in order. Serving skips the steps that only concern the label.

    An error names the column as the caller called it, even after a rename step.
    """
    original: dict[str, str] = {}
    for item in fitted:
        step = item["step"]
        if serving and step.get("training_only"):
            continue
        try:
            frame = TRANSFORMS[step["type"]](frame, step, item["state"])
        except FlowError as exc:
            message = str(exc)
            for new, old in original.items():
                message = message.replace(f"column '{new}'", f"column '{old}'")
            raise FlowError(message) from None
        if step["type"] == "rename":
            original.update({new: original.get(old, old) for old, new in step["mapping"].items()})
    return frame
