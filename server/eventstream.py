"""AWS's event stream framing (application/vnd.amazon.eventstream), as InvokeEndpointWithResponseStream answers.

A message is: total length, headers length (4 bytes each, big-endian), the CRC32 of those 8 bytes, the headers
(name length 1 byte, name, type 7 = string, value length 2 bytes, value), the payload, and the CRC32 of all
before it. sagemaker-runtime sends PayloadPart events (the payload is the part's bytes) and, when the model
fails mid-stream, one ModelStreamError exception (a JSON payload with Message and ErrorCode); the end of the
HTTP body ends the stream. botocore's own EventStreamBuffer reads these back in the tests.
"""

from __future__ import annotations

import json
import struct
import zlib

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7


def _headers(pairs: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in pairs.items():
        raw_name, raw_value = name.encode(), value.encode()
        out += struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


def message(headers: dict[str, str], payload: bytes) -> bytes:
    head = _headers(headers)
    prelude = struct.pack("!II", 12 + len(head) + len(payload) + 4, len(head))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    body = prelude + head + payload
    return body + struct.pack("!I", zlib.crc32(body))


def payload_part(data: bytes) -> bytes:
    return message(
        {":event-type": "PayloadPart", ":content-type": "application/octet-stream", ":message-type": "event"}, data
    )


def model_stream_error(message_text: str, error_code: str = "ModelError") -> bytes:
    """SageMaker's ModelStreamError; its documented codes are ModelInvocationTimeExceeded and StreamBroken, and
    sagestack adds ModelError for a handler that raised mid-stream."""
    body = json.dumps({"Message": message_text, "ErrorCode": error_code}).encode()
    headers = {":exception-type": "ModelStreamError", ":content-type": "application/json", ":message-type": "exception"}
    return message(headers, body)
