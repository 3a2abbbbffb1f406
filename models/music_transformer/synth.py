"""Notes -> a WAV file, rendered in numpy, because browsers play WAV but not MIDI (Accept: audio/wav).

Each note is a soft piano-like tone: the fundamental and three decaying harmonics, under an attack-decay envelope
scaled by velocity, and a short release after the note ends. The file is 16-bit mono PCM at RATE Hz and lasts until
the last note's release ends: `duration(notes)` seconds.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Sequence

import numpy as np

RATE = 22050
RELEASE = 0.25  # seconds a note rings on after its end
ATTACK = 0.01
HARMONICS = ((1, 1.0), (2, 0.45), (3, 0.2), (4, 0.1))  # (multiple of the fundamental, amplitude)


def duration(notes: Sequence) -> float:
    """The WAV's length in seconds: up to the last note's end, plus its release."""
    return max((n.end for n in notes), default=0.0) + RELEASE


def render(notes: Sequence, rate: int = RATE) -> np.ndarray:
    """float32 samples in [-1, 1]; notes have start, end (s), pitch (MIDI) and velocity (1-127)."""
    out = np.zeros(round(duration(notes) * rate), dtype=np.float32)
    for n in notes:
        start = round(n.start * rate)
        held = max(n.end - n.start, 0.02)
        t = np.arange(round((held + RELEASE) * rate), dtype=np.float32) / rate
        hz = 440.0 * 2.0 ** ((n.pitch - 69) / 12)
        tone = sum(a * np.sin(2 * np.pi * hz * k * t) * np.exp(-t * 1.5 * k) for k, a in HARMONICS if hz * k < rate / 2)
        envelope = np.minimum(t / ATTACK, 1.0) * np.where(t < held, 1.0, np.exp(-(t - held) / (RELEASE / 5)))
        part = (n.velocity / 127) * 0.3 * tone * envelope
        end = min(start + len(part), len(out))
        out[start:end] += part[: end - start]
    peak = float(np.abs(out).max(initial=0.0))
    return out / peak * 0.9 if peak > 0.9 else out


def wav_bytes(notes: Sequence, rate: int = RATE) -> bytes:
    pcm = (np.clip(render(notes, rate), -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()
