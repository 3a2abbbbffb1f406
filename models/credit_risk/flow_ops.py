"""The transforms of a Data-Wrangler-style flow, applied with fitted state.

This module is self-contained on purpose (numpy only): `sagestack flow export` writes its source,
verbatim, into the standalone prep.py, and serving runs that prep.py. So training, the exported
file and the endpoint all run these very functions, and scoring a record in the gateway does not
import pandas (~70 MB per worker) for what numpy does.

Every transform takes (table, step, state) and returns a new Table. `step` is the step as the flow
file declares it; `state` is what fitting learned (category lists, scaler statistics).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


class FlowError(ValueError):
    """Data that a step cannot take; names the step, and the row and column where one is at fault."""

    status_code = 400  # a serving handler turns this into an HTTP 400


class Table:
    """Named columns of equal length, in order: the part of a DataFrame the flow uses. Row n of an error
    message is position n - 1."""

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        self.data = dict(columns)

    @classmethod
    def of(cls, data: Any) -> Table:
        """A Table from a Table, a DataFrame or a mapping of column name -> values."""
        if isinstance(data, Table):
            return data
        return cls({str(name): as_column(data[name]) for name in data})

    @property
    def columns(self) -> list[str]:
        return list(self.data)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]

    def __len__(self) -> int:
        return len(next(iter(self.data.values()), ()))

    def with_columns(self, columns: dict[str, np.ndarray]) -> Table:
        return Table({**self.data, **columns})

    def select(self, names: Iterable[str]) -> Table:
        return Table({name: self.data[name] for name in names})

    def to_numpy(self, dtype: Any = None) -> np.ndarray:
        return np.column_stack([self.data[c] for c in self.data]).astype(dtype, copy=False)


def as_column(values: Any) -> np.ndarray:
    """One column's values as a 1-d array: numbers as numbers, anything else (strings, None, a client's
    nested lists) as Python objects, so a value reads back, and into an error message, as it came."""
    values = list(values) if not isinstance(values, np.ndarray) else values
    try:
        array = np.asarray(values)
    except ValueError:  # ragged nesting
        array = np.empty(0)
    if array.ndim == 1 and array.dtype.kind in "biuf":
        return array
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def _label(step: dict[str, Any]) -> str:
    return f"step {step['index']} ({step['type']})"


def _require(table: Table, columns: list[str], step: dict[str, Any]) -> None:
    missing = [c for c in columns if c not in table.data]
    if missing:
        raise FlowError(f"{_label(step)}: missing column(s) {', '.join(repr(c) for c in missing)}")


def _unknown(table: Table, column: str, allowed: list[Any], step: dict[str, Any]) -> None:
    known = set(allowed)
    for pos, value in enumerate(table[column].tolist()):
        if not _hashable(value) or value not in known:
            raise FlowError(
                f"{_label(step)}: row {pos + 1}, column '{column}': unknown category {value!r} "
                f"(known: {', '.join(map(str, allowed))})"
            )


def _hashable(value: Any) -> bool:
    """A client's list or object where a category belongs is an unknown category, not a crash."""
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def parse_as_type(table: Table, step: dict[str, Any], state: dict[str, Any]) -> Table:
    _require(table, step["columns"], step)
    parsed = {}
    for column in step["columns"]:
        raw = table[column]
        values = raw.astype("float64") if raw.dtype.kind in "biuf" else np.array([_number(v) for v in raw], "float64")
        bad = np.flatnonzero(np.isnan(values))
        if bad.size:
            pos = int(bad[0])
            value = raw[pos : pos + 1].tolist()[0]  # as the client sent it, not as a numpy scalar's repr
            raise FlowError(f"{_label(step)}: row {pos + 1}, column '{column}': {value!r} is not a number")
        parsed[column] = values.astype(step.get("to", "float64"))
    return table.with_columns(parsed)


def split_flatten(table: Table, step: dict[str, Any], state: dict[str, Any]) -> Table:
    column, into = step["column"], step["into"]
    _require(table, [column], step)
    rows = [str(v).split(step["delimiter"], len(into) - 1) for v in table[column].tolist()]
    for pos, parts in enumerate(rows):
        if len(parts) != len(into):
            raise FlowError(
                f"{_label(step)}: row {pos + 1}, column '{column}': expected {len(into)} parts "
                f"separated by {step['delimiter']!r}"
            )
    return table.with_columns({name: as_column([p[i].strip() for p in rows]) for i, name in enumerate(into)})


def rename(table: Table, step: dict[str, Any], state: dict[str, Any]) -> Table:
    mapping = step["mapping"]
    _require(table, list(mapping), step)
    return Table({mapping.get(name, name): values for name, values in table.data.items()})


def ordinal_encode(table: Table, step: dict[str, Any], state: dict[str, Any]) -> Table:
    column = step["column"]
    _require(table, [column], step)
    categories = state["categories"]
    _unknown(table, column, categories, step)
    codes = {c: i for i, c in enumerate(categories)}
    return table.with_columns({step.get("output", column): np.array([codes[v] for v in table[column]], "int64")})


def custom_map(table: Table, step: dict[str, Any], state: dict[str, Any]) -> Table:
    column, mapping = step["column"], step["mapping"]
    _require(table, [column], step)
    _unknown(table, column, list(mapping), step)
    return table.with_columns({step.get("output", column): np.array([mapping[v] for v in table[column]])})


def one_hot(table: Table, step: dict[str, Any], state: dict[str, Any]) -> Table:
    """Each listed column becomes one 0/1 column per fitted category, in the column's place."""
    _require(table, step["columns"], step)
    for column in step["columns"]:
        _unknown(table, column, state["categories"][column], step)
    pieces: dict[str, np.ndarray] = {}
    for name, values in table.data.items():
        if name in step["columns"]:
            for category in state["categories"][name]:
                pieces[f"{name}_{category}"] = (values == category).astype("float64")
        else:
            pieces[name] = values
    return Table(pieces)


def scale(table: Table, step: dict[str, Any], state: dict[str, Any]) -> Table:
    _require(table, step["columns"], step)
    scaled = {}
    for column in step["columns"]:
        center, spread = state["center"][column], state["spread"][column]
        scaled[column] = (table[column].astype("float64") - center) / (spread if spread else 1.0)
    return table.with_columns(scaled)


def drop(table: Table, step: dict[str, Any], state: dict[str, Any]) -> Table:
    _require(table, step["columns"], step)
    return table.select(c for c in table.columns if c not in step["columns"])


def move_to_first(table: Table, step: dict[str, Any], state: dict[str, Any]) -> Table:
    column = step["column"]
    _require(table, [column], step)
    return table.select([column, *[c for c in table.columns if c != column]])


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


def apply_steps(data: Any, fitted: list[dict[str, Any]], serving: bool = False) -> Table:
    """Run fitted steps in order on a Table, DataFrame or mapping of columns. Serving skips the steps that only
    concern the label.

    An error names the column as the caller called it, even after a rename step.
    """
    table = Table.of(data)
    original: dict[str, str] = {}
    for item in fitted:
        step = item["step"]
        if serving and step.get("training_only"):
            continue
        try:
            table = TRANSFORMS[step["type"]](table, step, item["state"])
        except FlowError as exc:
            message = str(exc)
            for new, old in original.items():
                message = message.replace(f"column '{new}'", f"column '{old}'")
            raise FlowError(message) from None
        if step["type"] == "rename":
            original.update({new: original.get(old, old) for old, new in step["mapping"].items()})
    return table
