"""Continuous batching for melody extension: concurrent requests share every decoding step.

One token of a 4-layer transformer costs about the same for one sequence as for eight: the time
goes to per-operator overhead, not arithmetic. So instead of each request running its own loop,
a scheduler thread keeps up to `max_batch` extensions in a SlotCache and advances all of them with
one forward per step. A request joins at the next step (its context is prefilled alone) and leaves
as soon as it is complete, without waiting for the others: continuous batching, as LLM servers do it.
Each extension keeps its own seed, parameters and constraints, so its result is the one it would
get alone, up to float rounding in the attention sums.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from models.music_transformer.generate import Extension, prompt
from models.music_transformer.model import MusicTransformer, SlotCache, step_rows
from models.music_transformer.params import Params

_END = object()  # the last item of a request's queue


@dataclass
class _Request:
    context: list[int]
    params: Params
    # Tokens as they are sampled, then _END (or the exception that failed the request).
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: bool = False  # its consumer stopped reading (a client that went away): drop it at the next step
    sent: int = 0  # how many of its extension's tokens are in `out`


@dataclass
class _Active:
    request: _Request
    extension: Extension
    token: int  # sampled, not yet fed to the model


class BatchedGenerator:
    def __init__(self, model: MusicTransformer, max_batch: int) -> None:
        self.model, self.max_batch = model, max_batch
        self.window = model.cfg.max_len
        self.cache = SlotCache(model.cfg, max_batch)
        self.active: list[_Active] = []  # active[r] lives in cache row r
        self.pending: deque[_Request] = deque()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.steps = 0  # decoding steps run so far (what a closed stream saves shows here)

    def extend(self, context: list[int], params: Params) -> list[int]:
        """The generated tokens after context (blocking; called from many server threads at once)."""
        return list(self.extend_stream(context, params))

    def extend_stream(self, context: list[int], params: Params) -> Iterator[int]:
        """The generated tokens after context, each as its step samples it. Closing the iterator early
        takes the extension out of the batch at the next step, so its slot goes to the next request."""
        request = _Request(prompt(context, self.window), params)
        with self.cond:
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="music-batching", daemon=True)
                self.thread.start()
            self.pending.append(request)
            self.cond.notify()
        try:
            while (item := request.out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.cancelled = True

    @torch.inference_mode()
    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.active:
                    self.cond.wait()
                joining = [
                    self.pending.popleft() for _ in range(min(len(self.pending), self.max_batch - len(self.active)))
                ]
            for request in joining:
                if not request.cancelled:
                    self._admit(request)
            if self.active:
                try:
                    self._step()
                except Exception as exc:  # the model failed for the batch: fail its requests, keep serving
                    for entry in self.active:
                        self._finish(entry.request, error=exc)
                    self.active.clear()

    def _admit(self, request: _Request) -> None:
        try:
            logits, cache = self.model(torch.tensor([request.context]))
            extension = Extension(request.context, request.params)
            token = extension.advance(logits[0, -1])
            if token is not None:
                self.cache.put(len(self.active), cache)
        except Exception as exc:  # a bad request fails alone
            self._finish(request, error=exc)
            return
        if token is None:
            self._finish(request, extension)
            return
        _send(request, extension)
        self.active.append(_Active(request, extension, token))

    def _step(self) -> None:
        for row, entry in enumerate(self.active):
            if int(self.cache.lengths[row]) >= self.window:
                # As extend_tokens does: start again from the newest half (the new token goes in with the step).
                keep = entry.extension.tokens[-(self.window // 2) : -1]
                _, cache = self.model(torch.tensor([keep]))
                self.cache.put(row, cache)
        logits = step_rows(self.model, torch.tensor([e.token for e in self.active]), self.cache)
        self.steps += 1
        still: list[_Active] = []
        for row, entry in enumerate(self.active):
            if entry.request.cancelled:
                continue  # nobody reads it any more: its row goes to the others
            try:
                token = entry.extension.advance(logits[row])
            except Exception as exc:
                self._finish(entry.request, error=exc)
                continue
            if token is None:
                self._finish(entry.request, entry.extension)
                continue
            _send(entry.request, entry.extension)
            entry.token = token
            if len(still) != row:
                self.cache.move(row, len(still))
            still.append(entry)
        self.active = still

    @staticmethod
    def _finish(request: _Request, extension: Extension | None = None, error: BaseException | None = None) -> None:
        if extension is not None:
            _send(request, extension)
            for token in extension.limits.closing_tokens():
                request.out.put(token)
        request.out.put(error if error is not None else _END)


def _send(request: _Request, extension: Extension) -> None:
    """The extension's tokens its request has not been sent yet."""
    for token in extension.out[request.sent :]:
        request.out.put(token)
    request.sent = len(extension.out)
