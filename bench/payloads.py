"""Real request bodies per model, for load tests and the tuner."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Payload:
    body: bytes
    headers: dict[str, str]
    description: str


def _attrs(model: str) -> dict[str, str]:
    return {"X-Amzn-SageMaker-Custom-Attributes": f"tfs-model-name={model}"}


def half_plus_three() -> Payload:
    body = json.dumps({"instances": [1.0, 2.0, 5.0]}).encode()
    return Payload(body, {"Content-Type": "application/json", **_attrs("half_plus_three")}, "JSON, 3 instances")


def credit_risk() -> Payload:
    from models.credit_risk.samples import samples

    rows = samples()["applications.csv"]
    return Payload(rows, {"Content-Type": "text/csv", **_attrs("credit_risk")}, "CSV, 5 applications with header")


def anomaly() -> Payload:
    from models.anomaly.samples import samples

    png = samples()["scratch.png"]
    return Payload(png, {"Content-Type": "image/png", **_attrs("anomaly")}, "PNG 256x256 board photo")


def yolov4() -> Payload:
    from models.yolov4.samples import PHOTOS

    photo = (PHOTOS / "china.jpg").read_bytes()
    return Payload(photo, {"Content-Type": "image/jpeg", **_attrs("yolov4")}, "JPEG 640x427 photo")


def yolov4_tiny() -> Payload:
    """The yolov4 photo, for the yolov4-tiny build (`sagestack build yolov4 --arch yolov4-tiny`)."""
    photo = yolov4()
    return Payload(photo.body, {**photo.headers, **_attrs("yolov4_tiny")}, photo.description)


def music_transformer() -> Payload:
    from models.music_transformer.samples import samples

    attrs = "tfs-model-name=music_transformer,extension_duration=10"
    headers = {"Content-Type": "audio/midi", "X-Amzn-SageMaker-Custom-Attributes": attrs}
    return Payload(samples()["twinkle_twinkle.mid"], headers, "MIDI Twinkle Twinkle, 10 s extension")


def image_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (30000 x 30000: 2.7 GB decoded) over a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


PAYLOADS = {
    "half_plus_three": half_plus_three,
    "credit_risk": credit_risk,
    "anomaly": anomaly,
    "yolov4": yolov4,
    "yolov4_tiny": yolov4_tiny,
    "music_transformer": music_transformer,
}


def payload(model: str) -> Payload:
    if model not in PAYLOADS:
        raise SystemExit(f"no load payload for model '{model}' (have: {', '.join(sorted(PAYLOADS))})")
    return PAYLOADS[model]()


def for_model(name: str) -> Payload:
    """The payload of a served model, `<family>_compiled` variants included (the family's body, named for it)."""
    family = name.removesuffix("_compiled")
    base = payload(family)
    attrs = base.headers["X-Amzn-SageMaker-Custom-Attributes"].replace(
        f"tfs-model-name={family}", f"tfs-model-name={name}"
    )
    return Payload(base.body, {**base.headers, "X-Amzn-SageMaker-Custom-Attributes": attrs}, base.description)
