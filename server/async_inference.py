"""InvokeEndpointAsync's contract, with the header names of botocore's sagemaker-runtime model.

The request names where its input lies (X-Amzn-SageMaker-InputLocation: s3:// or file://) instead of
carrying it; the answer is 202 with the InferenceId, and where the result (or the error) will be written:
`<S3OutputPath>[/<S3OutputPathExtension>]/<Filename or InferenceId.out>`, failures to
`<S3FailurePath or S3OutputPath>[/<extension>]/<InferenceId>-error.out`.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from server.async_queue import AsyncRequest
from server.errors import ApiError, bad_request
from server.settings import Settings
from server.storage import Location, StorageError

INPUT_LOCATION = "X-Amzn-SageMaker-InputLocation"
CONTENT_TYPE = "X-Amzn-SageMaker-Content-Type"
ACCEPT = "X-Amzn-SageMaker-Accept"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
REQUEST_TTL = "X-Amzn-SageMaker-RequestTTLSeconds"
INVOCATION_TIMEOUT = "X-Amzn-SageMaker-InvocationTimeoutSeconds"
OUTPUT_EXTENSION = "X-Amzn-SageMaker-S3OutputPathExtension"
FILENAME = "X-Amzn-SageMaker-Filename"
OUTPUT_LOCATION = "X-Amzn-SageMaker-OutputLocation"
FAILURE_LOCATION = "X-Amzn-SageMaker-FailureLocation"
# The dispatcher's call to /invocations for a request it is running: takes inputs past SAGEMAKER_MAX_PAYLOAD_IN_MB.
ASYNC_ID = "X-Sagestack-Async-Id"

MAX_INPUT_BYTES = 1024**3  # SageMaker async inference's payload limit
TTL_RANGE, DEFAULT_TTL = (60, 21600), 21600  # RequestTTLSeconds: 6 h by default
TIMEOUT_RANGE, DEFAULT_TIMEOUT = (1, 3600), 900  # InvocationTimeoutSeconds: 15 min by default
# InferenceId: 1-64 printable characters, not starting with a space (botocore's pattern). It names the output
# object, so sagestack also refuses '/', '\\', '?', '#' and '%' anywhere and a leading '.', which would put the
# output elsewhere than its OutputLocation says.
_INFERENCE_ID = re.compile(r"[^\s/.\\?#%][^/\\?#%\x00-\x1f\x7f-\uffff]{0,63}")
_FILENAME = re.compile(r"(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9_.-]*")  # botocore's FilenameHeader pattern
_PATH_PART = re.compile(r"[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*")


def parse(header: Callable[[str], str | None], settings: Settings) -> AsyncRequest:
    """The queued form of one InvokeEndpointAsync request, or an ApiError naming the header at fault."""
    if not settings.async_enabled:
        raise bad_request("this endpoint is not configured for async inference (set SAGESTACK_ASYNC_OUTPUT_PATH)")
    inference_id = header(INFERENCE_ID) or str(uuid.uuid4())
    if not _INFERENCE_ID.fullmatch(inference_id):
        raise bad_request(f"{INFERENCE_ID} {inference_id!r} must be 1-64 printable characters, without '/' or a "
                          "leading space or '.'")  # fmt: skip
    extension = (header(OUTPUT_EXTENSION) or "").strip("/")
    if extension and (len(extension) > 512 or not _PATH_PART.fullmatch(extension) or ".." in extension.split("/")):
        raise bad_request(f"{OUTPUT_EXTENSION} {extension!r} must be a relative key path (letters, digits, !_.*'()-)")
    filename = header(FILENAME)
    if filename is not None and (len(filename) > 32 or not _FILENAME.fullmatch(filename)):
        raise bad_request(f"{FILENAME} {filename!r} must be a file name of at most 32 letters, digits, '-', '_' "
                          "and one '.'")  # fmt: skip
    input_location = check_input(header(INPUT_LOCATION), settings)
    prefix = f"{extension}/" if extension else ""
    return AsyncRequest(
        inference_id=inference_id,
        input_location=input_location,
        output_location=_under(settings.async_output_path, prefix + (filename or f"{inference_id}.out")),
        failure_location=_under(
            settings.async_failure_path or settings.async_output_path, f"{prefix}{inference_id}-error.out"
        ),
        content_type=header(CONTENT_TYPE),
        accept=header(ACCEPT),
        custom_attributes=header(CUSTOM_ATTRIBUTES),
        invocation_timeout=_seconds(header, INVOCATION_TIMEOUT, TIMEOUT_RANGE, DEFAULT_TIMEOUT),
        request_ttl=_seconds(header, REQUEST_TTL, TTL_RANGE, DEFAULT_TTL),
    )


def _under(root: str | None, key: str) -> str:
    """The URI of `key` under the configured s3:// or file:// root; never outside it."""
    where = Location.parse(root or "")
    if where.is_s3:
        return where.uri_of(key)
    path = Path(where.child(key)).resolve()
    if not path.is_relative_to(Path(where.path).resolve()):
        raise bad_request(f"the output name {key!r} would leave {root}")
    return f"file://{path}"


def check_input(uri: str | None, settings: Settings) -> str:
    """The InputLocation, once it is known to name one readable object of at most 1 GB."""
    if not uri:
        raise bad_request(f"{INPUT_LOCATION} is required: the s3:// or file:// URI of the request's input")
    if not uri.startswith(("s3://", "file://")):
        raise bad_request(f"{INPUT_LOCATION} {uri!r} must be an s3://bucket/key or file:///path URI")
    try:
        where = Location.parse(uri)
    except StorageError as exc:
        raise bad_request(f"{INPUT_LOCATION}: {exc}") from None
    if not where.is_s3:
        path = Path(where.path).resolve()
        roots = settings.async_input_prefixes
        if not any(path.is_relative_to(root) for root in roots):
            allowed = ", ".join(str(r) for r in roots) or "none are set"
            raise ApiError(403, f"{INPUT_LOCATION} {uri!r} is outside SAGESTACK_ASYNC_INPUT_PREFIXES ({allowed})")
        uri = f"file://{path}"  # the dispatcher opens what was checked, not a link that may change since
        where = Location.parse(uri)
        if not os.access(path, os.R_OK):
            raise bad_request(f"{INPUT_LOCATION} {uri!r} cannot be read by the stack")
    try:
        size = where.itself().size
    except StorageError as exc:
        raise bad_request(f"{INPUT_LOCATION}: {exc}") from None
    if size > MAX_INPUT_BYTES:
        raise ApiError(413, f"{INPUT_LOCATION} {uri!r} holds {size:,} bytes; async inference takes at most 1 GB")
    return uri


def _seconds(header: Callable[[str], str | None], name: str, bounds: tuple[int, int], default: int) -> int:
    raw = header(name)
    if raw is None:
        return default
    lo, hi = bounds
    if not raw.strip().isdigit() or not lo <= int(raw) <= hi:
        raise bad_request(f"{name} {raw!r} must be a whole number of seconds from {lo} to {hi}")
    return int(raw)
