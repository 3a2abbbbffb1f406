"""Training data: the Bach chorales bundled with music21, as notes, split by piece, augmented.

Parsing costs ~0.1-0.2 s a chorale, so the notes are cached as JSON (build/data/music/chorales.json)
and parsed once. Tied notes are merged. The chorales carry no tempo of their own beyond music21's
default, so a quarter note is 0.5 s (120 bpm). The split is by piece with a fixed seed, so no
chorale leaks between train, validation and test. Augmentation transposes by up to +-3 semitones
and stretches time by 0.95-1.05, as DeepComposer's training did.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from models.music_transformer.tokens import MAX_PITCH, MIN_PITCH, Note

SECONDS_PER_QUARTER = 0.5
VELOCITY = 80
DEFAULT_CACHE = Path("build/data/music/chorales.json")
TRANSPOSES = range(-3, 4)
STRETCH = (0.95, 1.05)


def chorale_names() -> list[str]:
    """The corpus's 371 chorale entries name 350 distinct files (some chorales are listed twice)."""
    from music21 import corpus

    return sorted(set(corpus.chorales.Iterator(returnType="filename")))


def chorale_notes(name: str) -> list[Note]:
    from music21 import corpus

    flat = corpus.parse(name).stripTies().flatten()
    notes = []
    for element in flat.notes:
        start = float(element.offset) * SECONDS_PER_QUARTER
        end = start + float(element.quarterLength) * SECONDS_PER_QUARTER
        notes.extend(Note(round(start, 4), round(end, 4), p.midi, VELOCITY) for p in element.pitches)
    return merge_unisons(notes)


def merge_unisons(notes: list[Note]) -> list[Note]:
    """Two voices on one pitch at once are one sounding note (as on one MIDI channel, and in the tokens)."""
    merged: list[Note] = []
    last_by_pitch: dict[int, int] = {}
    for note in sorted(notes):
        i = last_by_pitch.get(note.pitch)
        if i is not None and note.start < merged[i].end:
            merged[i] = Note(merged[i].start, max(merged[i].end, note.end), note.pitch, merged[i].velocity)
            continue
        last_by_pitch[note.pitch] = len(merged)
        merged.append(note)
    return sorted(merged)


def load_chorales(cache: Path = DEFAULT_CACHE, limit: int | None = None) -> dict[str, list[Note]]:
    """{chorale name: notes}, from the cache, parsing (with progress) what it lacks."""
    names = chorale_names()[:limit]
    cached: dict[str, list[list[float]]] = json.loads(cache.read_text()) if cache.exists() else {}
    missing = [n for n in names if n not in cached]
    for i, name in enumerate(missing, 1):
        cached[name] = [[n.start, n.end, n.pitch, n.velocity] for n in chorale_notes(name)]
        print(f"\r[music] parsing chorales {i}/{len(missing)}", end="", file=sys.stderr, flush=True)
    if missing:
        print(file=sys.stderr)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(cached))
    return {n: [Note(s, e, int(p), int(v)) for s, e, p, v in cached[n]] for n in names}


def split(names: list[str], seed: int = 0, validation: float = 0.1, test: float = 0.1) -> dict[str, list[str]]:
    """By piece, with a fixed seed."""
    order = sorted(set(names))
    random.Random(seed).shuffle(order)
    n_val, n_test = max(1, round(len(order) * validation)), max(1, round(len(order) * test))
    return {
        "test": sorted(order[:n_test]),
        "validation": sorted(order[n_test : n_test + n_val]),
        "train": sorted(order[n_test + n_val :]),
    }


def augment(notes: list[Note], transpose: int, stretch: float) -> list[Note]:
    """Transposed and time-stretched; notes pushed outside the piano range are dropped."""
    return [
        Note(n.start * stretch, n.end * stretch, n.pitch + transpose, n.velocity)
        for n in notes
        if MIN_PITCH <= n.pitch + transpose <= MAX_PITCH
    ]


def random_augmentation(rng: random.Random) -> tuple[int, float]:
    return rng.choice(list(TRANSPOSES)), rng.uniform(*STRETCH)
