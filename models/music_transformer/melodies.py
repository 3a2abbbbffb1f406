"""Public-domain sample melodies, written as note lists (pitch, beats), not downloaded."""

from __future__ import annotations

from models.music_transformer.tokens import Note

# (MIDI pitch, length in beats); 0 is a rest.
MELODIES: dict[str, list[tuple[int, float]]] = {
    "twinkle_twinkle": [
        (60, 1), (60, 1), (67, 1), (67, 1), (69, 1), (69, 1), (67, 2),
        (65, 1), (65, 1), (64, 1), (64, 1), (62, 1), (62, 1), (60, 2),
    ],
    "ode_to_joy": [
        (64, 1), (64, 1), (65, 1), (67, 1), (67, 1), (65, 1), (64, 1), (62, 1),
        (60, 1), (60, 1), (62, 1), (64, 1), (64, 1.5), (62, 0.5), (62, 2),
    ],
    "frere_jacques": [
        (60, 1), (62, 1), (64, 1), (60, 1), (60, 1), (62, 1), (64, 1), (60, 1),
        (64, 1), (65, 1), (67, 2), (64, 1), (65, 1), (67, 2),
    ],
}  # fmt: skip


def melody(name: str, bpm: float = 100.0, velocity: int = 80) -> list[Note]:
    if name not in MELODIES:
        raise KeyError(f"unknown melody {name!r} (have: {', '.join(MELODIES)})")
    beat = 60.0 / bpm
    notes, now = [], 0.0
    for pitch, beats in MELODIES[name]:
        if pitch:
            notes.append(Note(round(now, 3), round(now + beats * beat * 0.95, 3), pitch, velocity))
        now += beats * beat
    return notes
