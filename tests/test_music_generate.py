"""Constrained sampling: every DeepComposer limit holds in what is generated, seeds are deterministic."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from models.music_transformer.batching import BatchedGenerator
from models.music_transformer.generate import (
    Constraints,
    context_notes,
    extend,
    extend_tokens,
    steps,
    stream_tokens,
)
from models.music_transformer.melodies import melody
from models.music_transformer.model import Config, MusicTransformer, SlotCache, step_rows
from models.music_transformer.params import ParameterError, Params, as_tensors, from_tensors, parse
from models.music_transformer.tokens import NOTE_OFF, NOTE_ON, TIME_SHIFT, VELOCITY, decode, encode


@pytest.fixture(scope="module")
def model() -> MusicTransformer:
    """Untrained: its choices are close to uniform, so the limits, not the model, keep the output in shape."""
    torch.manual_seed(0)
    return MusicTransformer(Config.tiny()).eval()


def extension(model, **overrides):
    p = Params(**{"extension_duration": 8.0, "temperature": 2.0, **overrides})
    context, generated = extend(model, melody("twinkle_twinkle"), p)
    boundary = sum(t - TIME_SHIFT + 1 for t in context if TIME_SHIFT <= t < VELOCITY) / 100
    added = [n for n in decode(context + generated) if n.start >= boundary]
    return p, boundary, generated, added


def test_duration_is_never_passed(model):
    for duration in (0.5, 3.0, 8.0):
        _, boundary, generated, added = extension(model, extension_duration=duration)
        elapsed = sum(t - TIME_SHIFT + 1 for t in generated if TIME_SHIFT <= t < VELOCITY)
        assert elapsed <= steps(duration)
        assert added and max(n.end for n in added) <= boundary + duration + 1e-9


def test_max_notes(model):
    for limit in (1, 5, 17):
        _, _, generated, added = extension(model, max_notes=limit)
        assert sum(NOTE_ON <= t < NOTE_OFF for t in generated) <= limit
        assert len(added) <= limit


def test_max_note_length(model):
    for limit in (0.1, 0.5):
        _, _, _, added = extension(model, max_note_length=limit, temperature=0.5)
        assert added and max(n.end - n.start for n in added) <= limit + 1e-9


def test_max_rest(model):
    for limit in (0.0, 0.3):
        _, boundary, _, added = extension(model, max_rest=limit, max_notes=2000)
        sounding_until = boundary
        for note in sorted(added):
            assert note.start - sounding_until <= limit + 1e-9, (note, sounding_until)
            sounding_until = max(sounding_until, note.end)


def test_masks_follow_the_state():
    c = Constraints(duration=100, max_rest=20, max_notes=2, max_note_length=30)
    mask = c.allowed()
    assert mask[TIME_SHIFT : TIME_SHIFT + 20].all() and not mask[TIME_SHIFT + 20 : VELOCITY].any()
    assert not mask[NOTE_OFF:TIME_SHIFT].any()  # nothing sounds
    c.push(NOTE_ON + 39)  # pitch 60
    mask = c.allowed()
    assert not mask[NOTE_OFF + 39] and not mask[NOTE_ON + 39]  # no zero-length note, no double strike
    c.push(TIME_SHIFT + 4)  # 50 ms
    mask = c.allowed()
    assert mask[NOTE_OFF + 39] and mask[TIME_SHIFT + 24] and not mask[TIME_SHIFT + 25]  # 300 ms at most in all
    c.push(VELOCITY + 3)
    mask = c.allowed()
    assert mask[NOTE_ON : NOTE_ON + 39].all() and not mask[TIME_SHIFT:].any()  # a VELOCITY is followed by a NOTE_ON
    c.push(NOTE_ON + 40)
    assert not c.allowed()[NOTE_ON:NOTE_OFF].any() and not c.allowed()[VELOCITY:].any()  # max_notes reached
    c.push(NOTE_OFF + 39)
    c.push(NOTE_OFF + 40)
    assert c.finished()  # nothing sounds and nothing may be added


def test_max_polyphony(model):
    for limit in (1, 3):
        _, _, generated, _ = extension(model, max_polyphony=limit, max_notes=2000)
        sounding, most = set(), 0
        for t in generated:
            if NOTE_ON <= t < NOTE_OFF:
                sounding.add(t - NOTE_ON)
            elif NOTE_OFF <= t < TIME_SHIFT:
                sounding.discard(t - NOTE_OFF)
            most = max(most, len(sounding))
        assert most == limit  # reached (the untrained model piles notes up) and never passed


def test_a_seed_is_deterministic(model):
    first = extension(model, seed=7)[2]
    assert extension(model, seed=7)[2] == first
    assert extension(model, seed=8)[2] != first


def test_top_k_one_is_greedy(model):
    a = extension(model, sampling="top_k", threshold=1, seed=1)[2]
    assert extension(model, sampling="top_k", threshold=1, seed=2)[2] == a


def test_cached_and_uncached_agree_within_the_window(model):
    p = Params(extension_duration=0.3, sampling="top_k", threshold=1)
    notes = melody("ode_to_joy")[:3]
    assert extend(model, notes, p, cached=True)[1] == extend(model, notes, p, cached=False)[1]


def test_one_batched_step_gives_each_row_its_own_logits(model):
    """Rows of different lengths in one SlotCache step: the same logits as each sequence's own cached step."""
    contexts = [
        encode(melody(name)[:n]) for name, n in (("twinkle_twinkle", 3), ("ode_to_joy", 7), ("frere_jacques", 5))
    ]
    cache = SlotCache(model.cfg, 4)
    alone = []
    with torch.inference_mode():
        for row, context in enumerate(contexts):
            _, kv = model(torch.tensor([context[:-1]]))
            cache.put(row, kv)
            logits, _ = model(torch.tensor([context[-1:]]), len(context) - 1, kv)
            alone.append(logits[0, -1])
        together = step_rows(model, torch.tensor([c[-1] for c in contexts]), cache)
    assert torch.allclose(together, torch.stack(alone), atol=1e-5)
    assert cache.lengths[:3].tolist() == [len(c) for c in contexts]


def test_batched_extensions_match_one_by_one(model):
    """Continuous batching: requests join and leave mid-flight, slide the window, and still get their own result."""
    cases = [
        (melody("twinkle_twinkle"), Params(extension_duration=8.0, temperature=2.0, seed=1)),  # passes the window
        (melody("ode_to_joy"), Params(extension_duration=1.0, seed=2)),
        (melody("frere_jacques"), Params(extension_duration=4.0, max_notes=3, seed=3)),
        (melody("ode_to_joy")[:2], Params(extension_duration=6.0, sampling="top_k", threshold=5, seed=4)),
        (melody("twinkle_twinkle")[:4], Params(extension_duration=0.5, seed=5)),
    ]
    contexts = [encode(context_notes(notes, p)) for notes, p in cases]
    expected = [extend_tokens(model, context, p) for context, (_, p) in zip(contexts, cases, strict=True)]
    assert max(len(c) + len(e) for c, e in zip(contexts, expected, strict=True)) > model.cfg.max_len
    generator = BatchedGenerator(model, max_batch=3)  # fewer slots than requests: some wait for a free row
    with ThreadPoolExecutor(len(cases)) as pool:
        got = list(pool.map(generator.extend, contexts, [p for _, p in cases]))
    assert got == expected


def test_a_stream_gives_the_same_tokens_and_a_closed_one_leaves_the_batch(model):
    context = encode(context_notes(melody("twinkle_twinkle"), Params()))
    long = Params(extension_duration=30.0, max_notes=200, temperature=2.0, seed=7)
    full = extend_tokens(model, context, long)
    assert len(full) > 200
    assert list(stream_tokens(model, context, long)) == full
    generator = BatchedGenerator(model, max_batch=1)  # one slot: the next request needs it back
    stream = generator.extend_stream(context, long)
    assert [next(stream) for _ in range(3)] == full[:3]
    stream.close()  # the client went away
    short = Params(extension_duration=1.0, seed=8)
    assert generator.extend(context, short) == extend_tokens(model, context, short)
    assert generator.steps < len(full) // 2  # the closed extension did not run on
    assert generator.active == [] and not generator.pending


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"temperature": 0}, "temperature"),
        ({"extension_duration": 31}, "extension_duration"),
        ({"max_notes": 2.5}, "max_notes"),
        ({"max_rest": "soon"}, "max_rest"),
        ({"sampling": "beam"}, "sampling"),
        ({"threshold": 1.5}, "threshold"),
        ({"sampling": "top_k", "threshold": 0.5}, "threshold"),
        ({"max_note_length": -1}, "max_note_length"),
        ({"loudness": 3}, "loudness"),
    ],
)
def test_bad_parameters_are_named(values, named):
    with pytest.raises(ParameterError, match=named):
        parse(values)


def test_parameters_travel_as_tensors():
    p = parse({"sampling": "top_k", "threshold": "12", "temperature": "1.25", "max_notes": "40", "seed": 3})
    assert from_tensors(as_tensors(p)) == p
