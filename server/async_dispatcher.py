"""The async dispatcher: runs the queued InvokeEndpointAsync requests through the stack's own /invocations.

As SageMaker's async endpoints do, it is a client of the container: each request is POSTed to gunicorn's socket
(the same handlers, batching, metrics and logs as any invocation), its input streamed from S3 or disk into
the request body, so a 1 GB input never sits whole in this process (the gateway spools it to disk). The answer
is written whole to the output location, or the error JSON to the failure location, and then the request is
marked finished. Up to SAGESTACK_ASYNC_MAX_CONCURRENT_INVOCATIONS (MaxConcurrentInvocationsPerInstance) run
at once. One per stack: the supervisor starts it after gunicorn and restarts it when it dies; at start it puts
back what a stopped stack left running (server.async_queue.recover).
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from server import async_inference
from server.async_queue import MAX_ATTEMPTS, AsyncQueue, AsyncRequest, Claim
from server.control import UnixConnection
from server.settings import Settings
from server.storage import Location, StorageError

POLL_SECONDS = 0.05  # how often an idle dispatcher looks at the queue
RETRY_SECONDS = 1.0  # after the gateway could not be reached (gunicorn restarting)
PURGE_SECONDS = 600.0  # how often rows of long-finished requests are deleted


def log(message: str) -> None:
    print(f"[async] {message}", file=sys.stderr, flush=True)


class GatewayUnreachable(Exception):
    """gunicorn's socket takes no connection (gunicorn restarting): the request goes back, not counted."""


class GatewayLost(Exception):
    """The connection broke after the request was sent (a worker died on it): tried MAX_ATTEMPTS times at most."""


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queue = AsyncQueue(settings.async_queue_file)
        self.concurrency = settings.async_max_concurrent_invocations
        self.slots = threading.BoundedSemaphore(self.concurrency)
        self.stopping = threading.Event()

    def run(self) -> None:
        requeued, given_up = self.queue.recover(written)
        if requeued or given_up:
            log(f"recovered: {len(requeued)} request(s) requeued, {len(given_up)} failed after repeated stops")
        log(f"dispatching from {self.queue.path}, {self.concurrency} at a time")
        purged = 0.0
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="async") as pool:
            while not self.stopping.is_set():
                if time.monotonic() - purged > PURGE_SECONDS:
                    self.queue.purge()
                    purged = time.monotonic()
                if not self.slots.acquire(timeout=0.5):
                    continue
                if self.stopping.is_set():  # SIGTERM came while it waited for a slot: take nothing new
                    self.slots.release()
                    break
                claimed = self.queue.claim()
                if claimed is None:
                    self.slots.release()
                    self.stopping.wait(POLL_SECONDS)
                    continue
                pool.submit(self._run_in_slot, claimed)
        log("stopped")

    def _run_in_slot(self, claim: Claim) -> None:
        try:
            self.run_one(claim)
        except Exception as exc:  # never lose the slot or the request's record to a bug
            log(f"{claim.request.inference_id}: dispatch failed: {type(exc).__name__}: {exc}")
            try:
                self._fail(claim.request, 500, f"internal error while dispatching: {type(exc).__name__}: {exc}")
            except Exception as again:  # the queue itself failed: recover() puts it back at the next start
                log(f"{claim.request.inference_id}: recording the failure failed too: {again}")
        finally:
            self.slots.release()

    def run_one(self, claim: Claim) -> None:
        request = claim.request
        if time.time() > claim.expires:
            self._fail(request, 400, f"RequestTTLSeconds ({request.request_ttl} s) passed before the request ran")
            return
        try:
            status, content_type, body = self.invoke(request)
        except GatewayUnreachable as exc:
            log(f"{request.inference_id}: {exc}; it stays queued")
            self.queue.retry(request.inference_id, counted=False)
            self.stopping.wait(RETRY_SECONDS)
            return
        except http.client.IncompleteRead as exc:  # a streamed answer the model cut short: its fault, not retried
            self._fail(request, 500, f"the model's streamed answer broke off after {len(exc.partial)} bytes")
            return
        except GatewayLost as exc:
            if claim.attempt >= MAX_ATTEMPTS:
                self._fail(request, 500, f"{exc}, {claim.attempt} times")
            else:
                log(f"{request.inference_id}: {exc}; trying it again")
                self.queue.retry(request.inference_id)
            return
        except StorageError as exc:
            self._fail(request, 400, f"reading InputLocation failed: {exc}")
            return
        except TimeoutError:
            self._fail(request, 504, f"no answer within InvocationTimeoutSeconds ({request.invocation_timeout} s)")
            return
        if status != 200:
            try:
                message = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                message = body.decode("utf-8", "replace")[:2000]
            self._fail(request, status, message)
            return
        try:
            Location.parse(request.output_location).write_bytes("", body, content_type)
        except StorageError as exc:
            self._fail(request, 500, f"writing the output failed: {exc}")
            return
        self.queue.finish(request.inference_id, True)

    def invoke(self, request: AsyncRequest) -> tuple[int, str, bytes]:
        """POST the input to /invocations over gunicorn's socket: (status, content type, body)."""
        where = Location.parse(request.input_location)
        obj = where.itself()
        headers = {
            "Content-Length": str(obj.size),
            "Content-Type": request.content_type or "application/octet-stream",
            async_inference.ASYNC_ID: request.inference_id,
            "X-Amzn-RequestId": request.inference_id,  # the access log names the request by its InferenceId
        }
        if request.accept:
            headers["Accept"] = request.accept
        if request.custom_attributes:
            headers[async_inference.CUSTOM_ATTRIBUTES] = request.custom_attributes
        if self.settings.auth_token:  # the gateway asks every caller for the token, this one too
            headers["Authorization"] = f"Bearer {self.settings.auth_token}"
        conn = UnixConnection(self.settings.gunicorn_socket, timeout=request.invocation_timeout)
        conn.blocksize = 1 << 20  # the body goes out a MB at a time
        try:
            try:
                conn.connect()
            except (ConnectionError, FileNotFoundError) as exc:
                raise GatewayUnreachable(f"gunicorn's socket takes no connection ({exc})") from None
            with where.open(obj) as stream:
                try:
                    body = Exactly(stream, obj.size, request.input_location)
                    conn.request("POST", "/invocations", body=body, headers=headers, encode_chunked=False)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the gateway answered before it read the whole body (a 4xx): read that answer
                try:
                    response = conn.getresponse()
                except (ConnectionError, http.client.HTTPException) as exc:
                    raise GatewayLost(f"the gateway closed the connection without an answer ({exc})") from None
                try:
                    body = response.read()
                except http.client.IncompleteRead:
                    raise  # a chunked answer cut short: the model broke off mid-stream
                except (ConnectionError, http.client.HTTPException) as exc:
                    raise GatewayLost(f"the connection broke during the answer ({exc})") from None
                return response.status, response.getheader("Content-Type") or "", body
        finally:
            conn.close()

    def _fail(self, request: AsyncRequest, status: int, message: str) -> None:
        """The error JSON at the failure location, then the request finished as failed (even if that write fails)."""
        error = {"InferenceId": request.inference_id, "status": status, "error": message}
        try:
            Location.parse(request.failure_location).write_bytes("", json.dumps(error).encode(), "application/json")
        except StorageError as exc:
            log(f"{request.inference_id}: writing the failure to {request.failure_location} failed: {exc}")
        self.queue.finish(request.inference_id, False, f"{status}: {message}"[:2000])


class Exactly:
    """The input stream as the request body: `size` bytes (its Content-Length), no more; a StorageError when the
    object ends sooner (it changed since it was accepted), instead of a gateway waiting for bytes that never come."""

    def __init__(self, stream: IO[bytes], size: int, uri: str) -> None:
        self.stream, self.left, self.uri = stream, size, uri

    def read(self, n: int = -1) -> bytes:
        if self.left == 0:
            return b""
        data = self.stream.read(self.left if n < 0 else min(n, self.left))
        if not data:
            raise StorageError(f"{self.uri!r} ended {self.left:,} bytes short of the size it had when accepted")
        self.left -= len(data)
        return data


def written(request: AsyncRequest, started: float) -> bool:
    """Whether this run of the request wrote its output before the stack stopped (an output from an earlier
    request under the same name is older than its start, so it does not count)."""
    try:
        return Location.parse(request.output_location).itself().modified >= started - 1.0  # S3: whole seconds
    except StorageError:
        return False


def main(argv: list[str]) -> int:
    dispatcher = Dispatcher(Settings.load(argv[0]))
    for sig in (signal.SIGTERM, signal.SIGINT):  # finish what runs (the supervisor waits), start nothing new
        signal.signal(sig, lambda *_: dispatcher.stopping.set())
    dispatcher.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
