"""The handler kit: what every model's `inference.py` needs, in one dependency-free module.

`sagestack build` ships this very file into each model's `code/lib/` (server/modeldir.export_code), and the
gateway uses it too, so a handler and the gateway agree on errors, custom attributes, Accept and images.
Every error carries its HTTP `status_code`; the gateway answers it as a JSON 4xx naming the problem.
Only the standard library is imported here; `decode_image` imports Pillow when it is called.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import sys
from typing import Any

JSON = "application/json"
CSV = "text/csv"
ALIASES = {"application/jsonl": "application/jsonlines", "application/x-jsonlines": "application/jsonlines",
           "text/json": JSON}  # fmt: skip
# Custom-attribute keys the gateway routes on (tfs-model-name, tfs-model-version, tfs-method, compiled).
ROUTING_PREFIX = "tfs-"
ROUTING_KEYS = ("compiled",)
# Decoded images larger than this are refused before their pixels are read (a decompression bomb is a 413);
# the gateway passes SAGESTACK_MAX_IMAGE_PIXELS as context.max_image_pixels.
MAX_IMAGE_PIXELS = 40_000_000
# JSON bodies: nesting (tensors need a handful of levels) and elements (commas + 1: an upper bound, read fast).
MAX_JSON_DEPTH = 64
MAX_JSON_ELEMENTS = 4_000_000
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_DEPTH_STEP = [0] * 256
for _byte, _step in ((ord("["), 1), (ord("{"), 1), (ord("]"), -1), (ord("}"), -1)):
    _DEPTH_STEP[_byte] = _step


class ClientError(ValueError):
    """A bad request; subclasses say which HTTP status."""

    status_code = 400


class BadRequest(ClientError):
    status_code = 400


class NotAcceptable(ClientError):
    status_code = 406


class PayloadTooLarge(ClientError):
    status_code = 413


class UnsupportedType(ClientError):
    status_code = 415


def parse_attributes(raw: str | None) -> dict[str, str]:
    """`X-Amzn-SageMaker-Custom-Attributes: tfs-model-name=m,temperature=1.1` -> {key: value}."""
    out = {}
    for part in (raw or "").split(","):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def model_attributes(raw: str | None) -> dict[str, str]:
    """The custom attributes meant for the model: parse_attributes without the gateway's routing keys."""
    return {
        k: v for k, v in parse_attributes(raw).items() if not k.startswith(ROUTING_PREFIX) and k not in ROUTING_KEYS
    }


def media_type(header: str | None, default: str = JSON) -> str:
    """`Text/CSV; charset=utf-8` -> `text/csv` (aliases folded), `default` for none."""
    if not header:
        return default
    kind = header.split(";", 1)[0].strip().lower()
    return ALIASES.get(kind, kind)


def negotiate(accept: str | None, offered: tuple[str, ...], default: str | None = None) -> str:
    """The first type in Accept that is `offered` (`default`, or the first offered, for none or a wildcard)."""
    fallback = default or offered[0]
    if not accept or not accept.strip():
        return fallback
    for part in accept.split(","):
        kind = media_type(part, "")
        if kind in ("*/*", ""):
            return fallback
        if kind.endswith("/*"):
            family = kind[:-1]
            matches = [o for o in (fallback, *offered) if o.startswith(family)]
            if matches:
                return matches[0]
        if kind in offered:
            return kind
    raise NotAcceptable(f"cannot produce any of Accept '{accept}'; use one of {', '.join(offered)}")


def json_body(
    body: bytes, what: str = "JSON", max_depth: int = MAX_JSON_DEPTH, max_elements: int = MAX_JSON_ELEMENTS
) -> Any:
    """The parsed JSON body, or a 400 that says where it broke or which limit it passes (checked before parsing:
    brackets are counted in C, so a body nested 100,000 deep costs milliseconds, not a RecursionError)."""
    if not body.strip():
        raise BadRequest("the request body is empty")
    if body.count(b",") >= max_elements:
        raise BadRequest(f"the {what} body has more than {max_elements:,} elements")
    brackets = body.translate(None, _NOT_BRACKETS)  # brackets inside strings count too: a safe overestimate
    depth = max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)
    if depth > max_depth:
        raise BadRequest(f"the {what} body is nested {depth} levels deep; at most {max_depth} are taken")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed {what}: {exc}") from None
    except RecursionError:
        raise BadRequest(f"the {what} body is nested deeper than {sys.getrecursionlimit()} levels") from None


def json_response(value: Any) -> tuple[str, str]:
    """A handler's (body, content type) for a JSON answer."""
    return json.dumps(value), JSON


def csv_rows(text: str) -> list[list[str]]:
    """The non-empty rows of a CSV body (a stray carriage return or a broken quote is a 400)."""
    try:
        return [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error as exc:
        raise BadRequest(f"malformed CSV: {exc}") from None


def csv_response(rows: list[list[Any]]) -> tuple[str, str]:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue(), CSV


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, fit: int | None = None):
    """PNG/JPEG/... bytes -> an RGB PIL image; empty, unreadable or oversized images are client errors.

    With `fit`, a JPEG is decoded at a reduced scale (1/2, 1/4 or 1/8, in the decoder: Pillow's draft mode)
    where the result still covers the image scaled to fit a fit x fit square, so a 12 Mpx photo for a 416
    input is never decoded whole. The original size stays in `image.info["original_size"]`.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadRequest("the image is empty")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
        width, height = img.size
        if width * height > max_pixels:
            raise PayloadTooLarge(f"the image is {width}x{height} pixels: at most {max_pixels:,} pixels are decoded")
        if fit is not None:
            scale = min(fit / width, fit / height)
            img.draft("RGB", (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
        img.load()
    except Image.DecompressionBombError as exc:  # Pillow's own check, at twice its limit, comes first
        raise PayloadTooLarge(f"the image is too large: at most {max_pixels:,} pixels are decoded ({exc})") from None
    except UnidentifiedImageError:  # its message carries the repr of our buffer, which says nothing to a client
        raise BadRequest(f"not a readable image: {len(data):,} bytes in no image format this server reads") from None
    except (OSError, SyntaxError) as exc:
        raise BadRequest(f"not a readable image: {exc}") from None
    rgb = img.convert("RGB")
    rgb.info["original_size"] = (width, height)
    return rgb
