"""Where SageMaker's jobs read and write: `s3://bucket/prefix`, `file:///path` or a plain path, one interface.

A Location is a prefix. `objects()` lists what lies under it (S3's S3Prefix: every key that starts with the
prefix, `s3://b/in/data` taking `in/data-1.csv` too; a folder: every file below it, recursively; a file:
itself), each with its name relative to the prefix's folder (after its last `/`), which is how SageMaker
names the outputs, and its full key or path, which is how it is read.
Reads stream (`open`), so an object of a gigabyte never sits whole in memory. Writes land whole or not at all:
a file is written beside its name and renamed, and an S3 object appears when its upload completes.
boto3 uses its usual configuration (IAM role, profiles, AWS_ENDPOINT_URL), so a moto server stands in for S3.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse


class StorageError(ValueError):
    """A location that cannot be used (bad URI, missing bucket or object, no permission); names the location."""


@dataclass(frozen=True)
class StoredObject:
    name: str  # relative to the location's folder: where its output goes under an output location
    key: str  # the full S3 key or local path: what `Location.open` reads
    size: int
    modified: float = 0.0  # seconds since the epoch (from `itself`; S3 has whole seconds)


@dataclass(frozen=True)
class Location:
    uri: str
    bucket: str | None  # S3 only
    path: str  # the S3 key prefix, or the local path

    @classmethod
    def parse(cls, uri: str) -> Location:
        parsed = urlparse(uri)
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise StorageError(f"{uri!r}: an S3 location is s3://bucket/prefix")
            return cls(uri, parsed.netloc, parsed.path.lstrip("/"))
        if parsed.scheme == "file":
            return cls(uri, None, parsed.path)
        if parsed.scheme:
            raise StorageError(f"{uri!r}: use s3://bucket/prefix, file:///path or a path")
        return cls(uri, None, uri)

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def child(self, key: str) -> str:
        """The full S3 key or local path of `key` under this location ("" is the location itself)."""
        if not key:
            return self.path
        if self.is_s3:
            return f"{self.path.rstrip('/')}/{key}" if self.path else key
        return str(Path(self.path) / key)

    def uri_of(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.child(key)}" if self.is_s3 else self.child(key)

    def objects(self) -> list[StoredObject]:
        """Every object under the location, sorted by name."""
        if self.is_s3:
            folder = self.path[: self.path.rfind("/") + 1]  # names are relative to the prefix's folder
            found = []
            with _s3_errors(self.uri):
                for page in _s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.path):
                    for item in page.get("Contents", []):
                        if not item["Key"].endswith("/"):
                            found.append(StoredObject(item["Key"][len(folder) :], item["Key"], int(item["Size"])))
            return sorted(found, key=lambda o: o.name)
        root = Path(self.path)
        if root.is_file():
            return [StoredObject(root.name, str(root), root.stat().st_size)]
        if not root.is_dir():
            raise StorageError(f"{self.uri!r}: no such file or folder")
        files = (p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        objects = (StoredObject(str(p.relative_to(root)), str(p), p.stat().st_size) for p in files)
        return sorted(objects, key=lambda o: o.name)

    def itself(self) -> StoredObject:
        """The location as one object (an async request's InputLocation names one file, not a prefix)."""
        name = self.path.rsplit("/", 1)[-1]
        if not self.is_s3:
            try:
                size = Path(self.path).stat().st_size
            except OSError as exc:
                raise StorageError(f"{self.uri!r}: {exc.strerror}") from None
            if not Path(self.path).is_file():
                raise StorageError(f"{self.uri!r}: not a file")
            return StoredObject(name, self.path, size, Path(self.path).stat().st_mtime)
        with _s3_errors(self.uri):
            head = _s3().head_object(Bucket=self.bucket, Key=self.path)
        return StoredObject(name, self.path, int(head["ContentLength"]), head["LastModified"].timestamp())

    def exists(self, key: str) -> bool:
        if not self.is_s3:
            return Path(self.child(key)).is_file()
        from botocore.exceptions import ClientError

        try:
            with _s3_errors(self.uri_of(key)):
                _s3().head_object(Bucket=self.bucket, Key=self.child(key))
        except StorageError as exc:
            cause = exc.__context__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise
        return True

    def open(self, obj: StoredObject) -> IO[bytes]:
        """A binary stream of one of `objects()` (S3's streaming body, or the open file)."""
        if not self.is_s3:
            try:
                return open(obj.key, "rb")  # the caller closes it
            except OSError as exc:
                raise StorageError(f"{obj.key!r}: {exc.strerror}") from None
        with _s3_errors(f"s3://{self.bucket}/{obj.key}"):
            return _Body(_s3().get_object(Bucket=self.bucket, Key=obj.key)["Body"], f"s3://{self.bucket}/{obj.key}")

    def write_file(self, key: str, local: Path, content_type: str | None = None) -> str:
        """Put the local file at `key`, whole (uploads go multipart for large files); returns its URI."""
        if self.is_s3:
            extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
            with _s3_errors(self.uri_of(key)):
                _s3().upload_file(str(local), self.bucket, self.child(key), ExtraArgs=extra)
            return self.uri_of(key)
        return self._replace_local(key, lambda partial: shutil.copyfile(local, partial))

    def write_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        if self.is_s3:
            extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
            with _s3_errors(self.uri_of(key)):
                _s3().put_object(Bucket=self.bucket, Key=self.child(key), Body=data, **extra)
            return self.uri_of(key)
        return self._replace_local(key, lambda partial: partial.write_bytes(data))

    def _replace_local(self, key: str, fill: Callable[[Path], object]) -> str:
        """Write `key` beside its name, then rename it in: a reader sees the whole file or none."""
        target = Path(self.child(key))
        partial = target.with_name(f".{target.name}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fill(partial)
            os.replace(partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise StorageError(f"{str(target)!r}: {exc.strerror or exc}") from None
        return str(target)


def lines(stream: IO[bytes], chunk: int = 1 << 20) -> Iterator[bytes]:
    """The stream's lines without their line ends, read a chunk at a time (a final line may lack one)."""
    rest = b""
    while block := stream.read(chunk):
        rest += block
        *complete, rest = rest.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r")
    if rest:
        yield rest.rstrip(b"\r")


class _Body:
    """S3's streaming body, its read errors (a dropped connection mid-object) as a StorageError."""

    def __init__(self, body: Any, uri: str) -> None:
        self.body, self.uri = body, uri

    def read(self, n: int = -1) -> bytes:
        with _s3_errors(self.uri):
            return self.body.read(n if n >= 0 else None)

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *exc: object) -> None:
        self.body.close()


_CLIENT_LOCK = threading.Lock()


@functools.cache
def _client(endpoint: str | None):
    import boto3

    return boto3.client("s3")  # boto3 reads AWS_ENDPOINT_URL itself; the cache key keeps one client per endpoint


def _s3():
    with _CLIENT_LOCK:  # boto3's default session is not safe to create clients from in several threads at once
        return _client(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


@contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    """botocore's errors, as a StorageError naming the location."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"{uri!r}: {exc}") from None
