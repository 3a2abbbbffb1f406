"""DeepComposer's generation parameters: names, defaults, ranges, and the error that names a bad one.

Torch-free, so the gateway's handler validates a request (400 naming the parameter) before any
runtime sees it, and the runtime gets the same values as integers and floats in tensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

SAMPLING = ("nucleus", "top_k")
FLOAT_PARAMS = ("threshold", "temperature", "input_duration", "extension_duration", "max_rest", "max_note_length")
INT_PARAMS = ("max_notes", "max_polyphony", "seed")
MAX_EXTENSION_SECONDS = 30.0


class ParameterError(ValueError):
    status_code = 400


@dataclass(frozen=True)
class Params:
    sampling: str = "nucleus"  # sampling technique: "nucleus" (threshold = p) or "top_k" (threshold = k)
    threshold: float = 0.95
    temperature: float = 0.95  # creative risk
    input_duration: float = 30.0  # seconds of the input used as context (and kept in the output)
    extension_duration: float = 30.0  # seconds to add, at most 30
    max_rest: float = 2.0  # longest silence the extension may contain, seconds
    max_notes: int = 400  # notes the extension may add
    max_note_length: float = 2.0  # seconds
    max_polyphony: int = 6  # notes sounding at once (ours: the chorales have 4 voices)
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


# name -> (low, high) inclusive, for the numeric parameters
RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.05, 5.0),
    "input_duration": (0.5, 120.0),
    "extension_duration": (0.1, MAX_EXTENSION_SECONDS),
    "max_rest": (0.0, 10.0),
    "max_notes": (1, 2000),
    "max_note_length": (0.01, 10.0),
    "max_polyphony": (1, 16),
    "seed": (0, 2**31 - 1),
}


def parse(values: dict) -> Params:
    """Params from a dict of strings or numbers (JSON body or custom attributes); unknown names are errors."""
    known = {f.name: f.type for f in fields(Params)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown}; known: {sorted(known)}")
    out: dict = {}
    for name, raw in values.items():
        default = getattr(Params, name)
        try:
            out[name] = _convert(default, raw)
        except (TypeError, ValueError):
            kind = {str: "string", int: "whole number", float: "number"}[type(default)]
            raise ParameterError(f"{name} must be a {kind}, got {raw!r}") from None
    params = Params(**out)
    check(params)
    return params


def _convert(default: str | int | float, raw: object) -> str | int | float:
    if isinstance(default, str):
        return str(raw)
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise TypeError
    number = float(raw)
    if isinstance(default, int):
        if not number.is_integer():
            raise ValueError
        return int(number)
    return number


def check(p: Params) -> None:
    if p.sampling not in SAMPLING:
        raise ParameterError(f"sampling must be one of {list(SAMPLING)}, got {p.sampling!r}")
    if p.sampling == "nucleus" and not 0.0 < p.threshold <= 1.0:
        raise ParameterError(f"threshold (nucleus p) must be in (0, 1], got {p.threshold}")
    if p.sampling == "top_k" and not (p.threshold >= 1 and float(p.threshold).is_integer()):
        raise ParameterError(f"threshold (top_k k) must be a whole number >= 1, got {p.threshold}")
    for name, (low, high) in RANGES.items():
        value = getattr(p, name)
        if not low <= value <= high:
            raise ParameterError(f"{name} must be between {low} and {high}, got {value}")


def as_tensors(p: Params) -> dict[str, np.ndarray]:
    """The parameters as the runtime's input tensors (shape [1] each)."""
    tensors = {"sampling": np.asarray([p.sampling.encode()], dtype=object)}
    tensors |= {n: np.asarray([getattr(p, n)], dtype=np.float32) for n in FLOAT_PARAMS}
    tensors |= {n: np.asarray([getattr(p, n)], dtype=np.int32) for n in INT_PARAMS}
    return tensors


def from_tensors(inputs: dict[str, np.ndarray]) -> Params:
    """Inverse of as_tensors, checked: a bad value is a ParameterError naming it."""
    sampling = inputs["sampling"].reshape(-1)[0]
    values = {n: float(inputs[n].reshape(-1)[0]) for n in FLOAT_PARAMS}
    values |= {n: int(inputs[n].reshape(-1)[0]) for n in INT_PARAMS}
    params = Params(sampling=sampling.decode() if isinstance(sampling, bytes) else str(sampling), **values)
    check(params)
    return params
