"""DeepComposer's 310-token vocabulary: MIDI -> tokens -> MIDI round trips."""

from __future__ import annotations

import pytest

from models.music_transformer import tokens as t
from models.music_transformer.melodies import MELODIES, melody


def test_vocabulary_layout():
    assert t.VOCAB_SIZE == 310
    assert [t.describe(x) for x in (0, 1, 2, 89, 90, 177, 178, 277, 278, 309)] == [
        "<PAD>", "<S>", "NOTE_ON_21", "NOTE_ON_108", "NOTE_OFF_21", "NOTE_OFF_108",
        "TIME_SHIFT_10ms", "TIME_SHIFT_1000ms", "VELOCITY_0", "VELOCITY_31",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        t.describe(310)


def quantized(notes):
    return [
        t.Note(
            round(n.start * 100) / 100, round(n.end * 100) / 100, n.pitch, t.bin_velocity(t.velocity_bin(n.velocity))
        )
        for n in notes
    ]


@pytest.mark.parametrize("name", sorted(MELODIES))
def test_notes_tokens_notes(name):
    notes = melody(name)
    decoded = t.decode(t.encode(notes))
    assert [(n.pitch, n.velocity) for n in decoded] == [(n.pitch, n.velocity) for n in quantized(notes)]
    for got, want in zip(decoded, quantized(notes), strict=True):
        assert got.start == pytest.approx(want.start, abs=0.0051) and got.end == pytest.approx(want.end, abs=0.0051)


def test_chords_long_rests_and_velocities():
    notes = [
        t.Note(0.0, 0.5, 60, 100),
        t.Note(0.0, 0.5, 64, 100),  # a chord: one velocity token for both
        t.Note(2.73, 3.0, 67, 30),  # a 2.23 s rest: three TIME_SHIFTs
        t.Note(3.0, 3.2, 108, 127),
        t.Note(3.0, 3.5, 10, 90),  # outside the piano range: dropped
    ]
    toks = t.encode(notes)
    names = [t.describe(x) for x in toks]
    assert names[:4] == ["<S>", "VELOCITY_25", "NOTE_ON_60", "NOTE_ON_64"]
    assert names.count("TIME_SHIFT_1000ms") == 2 and "TIME_SHIFT_230ms" in names
    assert t.decode(toks) == quantized(notes[:4])


def test_midi_round_trip():
    notes = quantized(melody("ode_to_joy"))
    back = t.read_midi(t.write_midi(notes))
    assert [(n.pitch, n.velocity) for n in back] == [(n.pitch, n.velocity) for n in notes]
    for got, want in zip(back, notes, strict=True):
        assert got.start == pytest.approx(want.start, abs=0.002) and got.end == pytest.approx(want.end, abs=0.002)
    assert t.decode(t.encode(t.read_midi(t.write_midi(notes)))) == notes


def test_bad_midi():
    with pytest.raises(t.MidiError, match="empty"):
        t.read_midi(b"")
    with pytest.raises(t.MidiError, match="not a readable MIDI"):
        t.read_midi(b"MThd\x00\x00\x00\x06garbage")
    with pytest.raises(t.MidiError, match="no notes"):
        t.read_midi(t.write_midi([]))
