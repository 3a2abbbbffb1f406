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

import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from models.music_transformer.generate import Extension, prompt
from models.music_transformer.model import MusicTransformer, SlotCache, step_rows
from models.music_transformer.params import Params


@dataclass
class _Request:
    context: list[int]
    params: Params
    done: threading.Event = field(default_factory=threading.Event)
    result: list[int] | None = None
    error: BaseException | None = None


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

    def extend(self, context: list[int], params: Params) -> list[int]:
        """The generated tokens after context (blocking; called from many server threads at once)."""
        request = _Request(prompt(context, self.window), params)
        with self.cond:
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="music-batching", daemon=True)
                self.thread.start()
            self.pending.append(request)
            self.cond.notify()
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

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
            self._finish(request, extension.result())
            return
        self.active.append(_Active(request, extension, token))

    def _step(self) -> None:
        for row, entry in enumerate(self.active):
            if int(self.cache.lengths[row]) >= self.window:
                # As extend_tokens does: start again from the newest half (the new token goes in with the step).
                keep = entry.extension.tokens[-(self.window // 2) : -1]
                _, cache = self.model(torch.tensor([keep]))
                self.cache.put(row, cache)
        logits = step_rows(self.model, torch.tensor([e.token for e in self.active]), self.cache)
        still: list[_Active] = []
        for row, entry in enumerate(self.active):
            try:
                token = entry.extension.advance(logits[row])
            except Exception as exc:
                self._finish(entry.request, error=exc)
                continue
            if token is None:
                self._finish(entry.request, entry.extension.result())
                continue
            entry.token = token
            if len(still) != row:
                self.cache.move(row, len(still))
            still.append(entry)
        self.active = still

    @staticmethod
    def _finish(request: _Request, result: list[int] | None = None, error: BaseException | None = None) -> None:
        request.result, request.error = result, error
        request.done.set()
