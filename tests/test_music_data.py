"""Bach chorales from music21: parsed once and cached, split by piece, augmented, tokenised."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from models.music_transformer import data
from models.music_transformer.tokens import MAX_PITCH, MIN_PITCH, decode, encode


@pytest.fixture(scope="module")
def chorales(tmp_path_factory):
    cache = tmp_path_factory.mktemp("music") / "chorales.json"
    return cache, data.load_chorales(cache, limit=3)


def test_bundled_chorales_are_found():
    assert len(data.chorale_names()) == 350  # 371 entries, 21 of them repeats


def test_parsed_once_then_cached(chorales):
    cache, pieces = chorales
    assert len(pieces) == 3 and all(len(notes) > 100 for notes in pieces.values())
    on_disk = json.loads(cache.read_text())
    assert sorted(on_disk) == sorted(pieces)
    for notes in pieces.values():
        assert all(MIN_PITCH <= n.pitch <= MAX_PITCH and n.end > n.start >= 0 for n in notes)
    # A second load reads the cache: the same notes, and the file is not rewritten.
    stamp = cache.stat().st_mtime_ns
    assert data.load_chorales(cache, limit=3) == pieces
    assert cache.stat().st_mtime_ns == stamp


def test_four_voices_and_quarter_notes(chorales):
    _, pieces = chorales
    for notes in pieces.values():
        times = sorted({n.start for n in notes})
        sounding = [sum(n.start <= t < n.end for n in notes) for t in times]
        assert max(sounding) == 4  # soprano, alto, tenor, bass
        assert 0.5 in {round(n.end - n.start, 4) for n in notes}  # quarter notes at 120 bpm


def test_split_is_by_piece_and_fixed():
    names = data.chorale_names()
    parts = data.split(names, seed=0)
    assert parts == data.split(list(reversed(names)), seed=0)
    assert (len(parts["train"]), len(parts["validation"]), len(parts["test"])) == (280, 35, 35)
    assert not set(parts["train"]) & set(parts["test"]) and not set(parts["validation"]) & set(parts["test"])
    assert sorted(parts["train"] + parts["validation"] + parts["test"]) == sorted(names)


def test_augmentation(chorales):
    _, pieces = chorales
    notes = next(iter(pieces.values()))
    shifted = data.augment(notes, 3, 1.05)
    assert [n.pitch for n in shifted] == [n.pitch + 3 for n in notes]
    assert shifted[-1].end == pytest.approx(notes[-1].end * 1.05)
    assert data.augment([replace(notes[0], pitch=107)], 3, 1.0) == []  # pushed past 108: dropped
    t, s = data.random_augmentation(random.Random(1))
    assert -3 <= t <= 3 and 0.95 <= s <= 1.05


def test_unisons_merge():
    a, b = data.Note(0.0, 1.0, 60, 80), data.Note(0.5, 1.5, 60, 80)
    assert data.merge_unisons([b, a, data.Note(2.0, 3.0, 60, 80)]) == [
        data.Note(0.0, 1.5, 60, 80),
        data.Note(2.0, 3.0, 60, 80),
    ]


def test_chorale_tokens_round_trip(chorales):
    _, pieces = chorales
    notes = next(iter(pieces.values()))
    back = decode(encode(notes))
    assert [(n.pitch, round(n.start, 2), round(n.end, 2)) for n in back] == [
        (n.pitch, round(n.start, 2), round(n.end, 2)) for n in sorted(notes)
    ]
