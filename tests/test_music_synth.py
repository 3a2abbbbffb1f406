"""The music handler's synth (Accept: audio/wav): the pitch it sounds, when, and for how long."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from models.music_transformer import synth
from models.music_transformer.tokens import Note


def spectrum_peak(samples: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / synth.RATE)[power.argmax()])


@pytest.mark.parametrize(("pitch", "hz"), [(69, 440.0), (60, 261.63), (81, 880.0)])
def test_a_note_sounds_at_its_pitch(pitch, hz):
    samples = synth.render([Note(0.0, 1.0, pitch, 100)])
    assert spectrum_peak(samples[: synth.RATE]) == pytest.approx(hz, abs=2.0)


def test_notes_sound_when_they_play_and_the_file_lasts_until_the_last_release():
    notes = [Note(0.5, 1.0, 60, 100), Note(2.0, 2.5, 72, 60)]
    samples = synth.render(notes)
    assert len(samples) == round((2.5 + synth.RELEASE) * synth.RATE)
    loud = np.abs(samples) > 0.01
    second = synth.RATE
    assert not loud[: second // 2].any()  # silence before the first note
    assert loud[second // 2 : second].mean() > 0.5 and loud[2 * second : int(2.5 * second)].mean() > 0.5
    assert not loud[int(1.5 * second) : 2 * second].any()  # the first note has rung out
    with wave.open(io.BytesIO(synth.wav_bytes(notes))) as w:
        assert w.getnframes() == len(samples) and w.getframerate() == synth.RATE


def test_no_notes_is_a_short_silence_and_loud_chords_do_not_clip():
    assert not synth.render([]).any()
    chord = synth.render([Note(0.0, 1.0, p, 127) for p in range(48, 84, 2)])
    assert np.abs(chord).max() <= 0.9 + 1e-6
