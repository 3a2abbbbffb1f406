"""The music transformer's sample requests: the bundled melodies as MIDI files."""

from __future__ import annotations

from models.music_transformer.melodies import MELODIES, melody
from models.music_transformer.tokens import write_midi


def samples() -> dict[str, bytes]:
    return {f"{name}.mid": write_midi(melody(name)) for name in MELODIES}
