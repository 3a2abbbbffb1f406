"""Darknet's .cfg and .weights formats, so the published YOLOv4 weights can be brought in.

.weights: int32 major, minor, revision; `seen` as uint64 when major*10+minor >= 2, else int32;
then float32 little-endian values for every [convolutional] block in cfg order: with batch norm,
bias[n] scale[n] mean[n] var[n] then the OIHW weights; without, bias[n] then the weights.
The channels entering each convolution are tracked through [route], [shortcut], [maxpool],
[upsample] and [yolo] blocks, which is what the weight shapes depend on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DarknetError(ValueError):
    pass


@dataclass(frozen=True)
class ConvSpec:
    layer: int  # index among the cfg's layers (sections after [net])
    in_channels: int
    filters: int
    size: int
    groups: int
    batch_normalize: bool

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.filters, self.in_channels // self.groups, self.size, self.size)


def parse_cfg(text: str) -> list[dict[str, str]]:
    """Sections in order, each {"type": name, key: value, ...}; comments and blank lines skipped."""
    sections: list[dict[str, str]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise DarknetError(f"cfg line {n}: unterminated section header {line!r}")
            sections.append({"type": line[1:-1].strip()})
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
        else:
            raise DarknetError(f"cfg line {n}: expected [section] or key=value, got {line!r}")
    if not sections or sections[0]["type"] not in ("net", "network"):
        raise DarknetError("a cfg starts with a [net] section")
    return sections


def conv_specs(sections: list[dict[str, str]]) -> list[ConvSpec]:
    """Every [convolutional] block with the channels that enter it, in cfg order."""
    channels = int(sections[0].get("channels", 3))
    outputs: list[int] = []
    specs = []
    for i, s in enumerate(sections[1:]):
        kind = s["type"]
        if kind == "convolutional":
            filters = int(s["filters"])
            specs.append(
                ConvSpec(
                    i,
                    channels,
                    filters,
                    int(s.get("size", 1)),
                    int(s.get("groups", 1)),
                    s.get("batch_normalize") == "1",
                )
            )
            channels = filters
        elif kind == "route":
            layers = [int(x) for x in s["layers"].split(",")]
            picked = [outputs[x if x >= 0 else i + x] for x in layers]
            channels = sum(picked) // int(s.get("groups", 1))
        elif kind in ("shortcut", "maxpool", "upsample", "yolo", "dropout"):
            pass  # channels unchanged
        else:
            raise DarknetError(f"layer {i}: unsupported block [{kind}]")
        outputs.append(channels)
    return specs


def _header_format(major: int, minor: int) -> str:
    return "<Q" if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else "<i"


def read_weights(data: bytes, specs: list[ConvSpec]) -> tuple[dict[str, int], list[dict[str, np.ndarray]]]:
    if len(data) < 16:
        raise DarknetError("a .weights file has at least a 16-byte header")
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    fmt = _header_format(major, minor)
    (seen,) = struct.unpack_from(fmt, data, 12)
    values = np.frombuffer(data, dtype="<f4", offset=12 + struct.calcsize(fmt))
    blocks, pos = [], 0
    for spec in specs:
        block = {}
        parts = ["bias", "scale", "mean", "var"] if spec.batch_normalize else ["bias"]
        for name in parts:
            block[name] = values[pos : pos + spec.filters].copy()
            pos += spec.filters
        count = int(np.prod(spec.weight_shape))
        block["weights"] = (
            values[pos : pos + count].reshape(spec.weight_shape).copy() if pos + count <= len(values) else None
        )
        pos += count
        if pos > len(values) or block["weights"] is None:
            raise DarknetError(
                f"the .weights file ends inside the convolution of layer {spec.layer}: cfg and weights differ"
            )
        blocks.append(block)
    if pos != len(values):
        raise DarknetError(f"{len(values) - pos} values are left after the last convolution: cfg and weights differ")
    return {"major": major, "minor": minor, "revision": revision, "seen": seen}, blocks


def write_weights(header: dict[str, int], specs: list[ConvSpec], blocks: list[dict[str, np.ndarray]]) -> bytes:
    out = [struct.pack("<3i", header["major"], header["minor"], header["revision"])]
    out.append(struct.pack(_header_format(header["major"], header["minor"]), header["seen"]))
    for spec, block in zip(specs, blocks, strict=True):
        parts = ["bias", "scale", "mean", "var"] if spec.batch_normalize else ["bias"]
        for name in parts:
            out.append(np.asarray(block[name], dtype="<f4").reshape(spec.filters).tobytes())
        out.append(np.asarray(block["weights"], dtype="<f4").reshape(spec.weight_shape).tobytes())
    return b"".join(out)


def load(cfg: Path, weights: Path) -> tuple[list[ConvSpec], dict[str, int], list[dict[str, np.ndarray]]]:
    specs = conv_specs(parse_cfg(cfg.read_text()))
    header, blocks = read_weights(weights.read_bytes(), specs)
    return specs, header, blocks
