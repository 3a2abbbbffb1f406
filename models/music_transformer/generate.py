"""Extending a melody: constrained sampling with a KV cache (and the no-cache eager baseline).

DeepComposer's limits are enforced while sampling, by masking every token that would break one:
- a TIME_SHIFT may not pass the extension's end, stretch a sounding note past max_note_length, or
  (with nothing sounding) make a rest longer than max_rest;
- NOTE_ON (and VELOCITY, which must be followed by one) stops once max_notes notes were added, and
  while max_polyphony notes sound;
- NOTE_OFF only for a pitch sounding since an earlier step, NOTE_ON only for a silent one; never
  <PAD> or <S>.
The extension ends when its duration is used up, or when nothing is sounding and no note may be added;
notes still sounding then are closed there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from models.music_transformer.model import MusicTransformer
from models.music_transformer.params import Params
from models.music_transformer.tokens import (
    MAX_PITCH,
    MIN_PITCH,
    N_SHIFTS,
    NOTE_OFF,
    NOTE_ON,
    START,
    STEPS_PER_SECOND,
    TIME_SHIFT,
    VELOCITY,
    VOCAB_SIZE,
    Note,
    encode,
)

MAX_NEW_TOKENS = 4000  # a safety net: 30 s of dense four-voice writing is ~600 tokens


def steps(seconds: float) -> int:
    return round(seconds * STEPS_PER_SECOND)


@dataclass
class Constraints:
    """What the extension may do next, given what it has done (all times in 10 ms steps)."""

    duration: int
    max_rest: int
    max_notes: int
    max_note_length: int
    max_polyphony: int = 6
    now: int = 0
    silent_since: int = 0
    notes_added: int = 0
    after_velocity: bool = False
    sounding: dict[int, int] = field(default_factory=dict)  # pitch -> start step

    @classmethod
    def of(cls, p: Params) -> Constraints:
        note_length = max(1, steps(p.max_note_length))
        return cls(steps(p.extension_duration), steps(p.max_rest), p.max_notes, note_length, p.max_polyphony)

    def longest_shift(self) -> int:
        limit = min(N_SHIFTS, self.duration - self.now)
        if self.sounding:
            limit = min(limit, self.max_note_length - (self.now - min(self.sounding.values())))
        else:
            limit = min(limit, self.max_rest - (self.now - self.silent_since))
        return limit

    def allowed(self) -> torch.Tensor:
        mask = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
        may_add = self.notes_added < self.max_notes and self.now < self.duration
        may_add = may_add and len(self.sounding) < self.max_polyphony
        if may_add:
            mask[NOTE_ON : NOTE_ON + MAX_PITCH - MIN_PITCH + 1] = True
            for pitch in self.sounding:
                mask[NOTE_ON + pitch - MIN_PITCH] = False
        if self.after_velocity:
            return mask
        if may_add:
            mask[VELOCITY:VOCAB_SIZE] = True
        for pitch, start in self.sounding.items():
            mask[NOTE_OFF + pitch - MIN_PITCH] = start < self.now  # a note lasts at least one step
        shift = self.longest_shift()
        if shift > 0:
            mask[TIME_SHIFT : TIME_SHIFT + shift] = True
        return mask

    def finished(self) -> bool:
        if self.now >= self.duration:
            return True
        return not self.sounding and self.notes_added >= self.max_notes

    def push(self, token: int) -> None:
        self.after_velocity = VELOCITY <= token < VOCAB_SIZE
        if NOTE_ON <= token < NOTE_OFF:
            self.sounding[token - NOTE_ON + MIN_PITCH] = self.now
            self.notes_added += 1
        elif NOTE_OFF <= token < TIME_SHIFT:
            self.sounding.pop(token - NOTE_OFF + MIN_PITCH)
            if not self.sounding:
                self.silent_since = self.now
        elif TIME_SHIFT <= token < VELOCITY:
            self.now += token - TIME_SHIFT + 1

    def closing_tokens(self) -> list[int]:
        return [NOTE_OFF + pitch - MIN_PITCH for pitch in sorted(self.sounding)]


def sample(logits: torch.Tensor, mask: torch.Tensor, p: Params, rng: torch.Generator) -> int:
    """One token from logits [V]: temperature, then the allowed tokens, then top-k or nucleus."""
    logits = (logits / p.temperature).masked_fill(~mask, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if p.sampling == "top_k":
        k = min(int(p.threshold), int(mask.sum()))
        top, idx = probs.topk(k)
    else:
        top, idx = probs.sort(descending=True)
        keep = (top.cumsum(0) - top) < p.threshold  # the smallest set whose mass reaches p
        top, idx = top[keep], idx[keep]
    return int(idx[torch.multinomial(top, 1, generator=rng)])


def context_notes(notes: list[Note], p: Params) -> list[Note]:
    """The first input_duration seconds of the input (notes cut at that point)."""
    cut = p.input_duration
    return [Note(n.start, min(n.end, cut), n.pitch, n.velocity) for n in notes if n.start < cut]


def prompt(context: list[int], window: int) -> list[int]:
    """What the model is fed first: the newest `window` context tokens, or <S> for an empty context."""
    return context[-window:] if context else [START]


class Extension:
    """One melody being extended: the sampling state between two model calls.

    Both the one-request loop below and the batched scheduler (models/music_transformer/batching.py)
    drive it the same way: `advance(logits)` samples a token and says whether to feed it back.
    """

    def __init__(self, context: list[int], p: Params) -> None:
        self.p = p
        self.rng = torch.Generator().manual_seed(p.seed)
        self.limits = Constraints.of(p)
        self.tokens = list(context)
        self.out: list[int] = []

    def advance(self, logits: torch.Tensor) -> int | None:
        """Sample the next token from logits [V]; None when the extension is complete (nothing to feed back)."""
        if self.limits.finished() or len(self.out) >= MAX_NEW_TOKENS:
            return None
        mask = self.limits.allowed()
        if not mask.any():
            return None
        token = sample(logits, mask, self.p, self.rng)
        self.limits.push(token)
        self.out.append(token)
        self.tokens.append(token)
        if self.limits.finished() or len(self.out) >= MAX_NEW_TOKENS:
            return None
        return token

    def result(self) -> list[int]:
        return self.out + self.limits.closing_tokens()


Step = Callable[[list[int], int], torch.Tensor]


def _generate(context: list[int], p: Params, first: torch.Tensor, step: Step) -> Iterator[int]:
    """The sampling loop, each token as it is sampled (then the closing NOTE_OFFs); `step(tokens so far, new
    token)` gives the next logits."""
    extension = Extension(context, p)
    token, sent = extension.advance(first), 0
    while True:
        yield from extension.out[sent:]
        sent = len(extension.out)
        if token is None:
            break
        token = extension.advance(step(extension.tokens, token))
    yield from extension.limits.closing_tokens()


def extend_tokens(model: MusicTransformer, context: list[int], p: Params) -> list[int]:
    """Generated tokens after context (see stream_tokens)."""
    return list(stream_tokens(model, context, p))


def stream_tokens(model: MusicTransformer, context: list[int], p: Params) -> Iterator[int]:
    """Generated tokens after context, with a KV cache: one position of work per new token.

    When the cache holds a full training window, it is rebuilt from the newest half of the tokens,
    starting again at position 0. Training windows start anywhere in a piece, so the model is at home
    with that; merely dropping the oldest keys would take away the first position every window had
    in training (the "attention sink"), and generation degrades soon after.
    """
    window = model.cfg.max_len
    context = prompt(context, window)
    with torch.inference_mode():
        logits, cache = model(torch.tensor([context]))
    state: dict = {"cache": cache, "pos": len(context)}

    @torch.inference_mode()
    def step(tokens: list[int], token: int) -> torch.Tensor:
        if state["pos"] >= window:
            keep = tokens[-(window // 2) :]
            logits, state["cache"] = model(torch.tensor([keep]))
            state["pos"] = len(keep)
            return logits[0, -1]
        logits, state["cache"] = model(torch.tensor([[token]]), state["pos"], state["cache"])
        state["pos"] += 1
        return logits[0, -1]

    return _generate(context, p, logits[0, -1], step)


@torch.inference_mode()
def extend_tokens_uncached(model: MusicTransformer, context: list[int], p: Params) -> list[int]:
    """The baseline: the same sampling, re-running the whole window for every new token."""
    window = model.cfg.max_len
    context = prompt(context, window)

    def step(tokens: list[int], _: int) -> torch.Tensor:
        logits, _ = model(torch.tensor([tokens[-window:]]))
        return logits[0, -1]

    return list(_generate(context, p, step(context, START), step))


def extend(model: MusicTransformer, notes: list[Note], p: Params, cached: bool = True) -> tuple[list[int], list[int]]:
    """(context tokens, generated tokens) for an input melody; decode(context + generated) is the result."""
    context = encode(context_notes(notes, p))
    run = extend_tokens if cached else extend_tokens_uncached
    return context, run(model, context, p)
