"""DeepComposer's event vocabulary (310 tokens) and MIDI <-> notes <-> tokens.

Token ids: 0 <PAD>, 1 <S>, then NOTE_ON and NOTE_OFF for pitches 21-108 (88 each), 100 TIME_SHIFT
steps of 10 ms (10 ms - 1 s), and 32 VELOCITY bins. A melody is a list of notes; encoding walks
their on/off events in time order, emitting TIME_SHIFTs for the gaps (several for gaps over 1 s)
and a VELOCITY token whenever the velocity bin changes before a NOTE_ON. Decoding inverts it, so
MIDI -> tokens -> MIDI keeps every note up to 10 ms timing and velocity binning.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

PAD, START = 0, 1
MIN_PITCH, MAX_PITCH = 21, 108
N_PITCHES = MAX_PITCH - MIN_PITCH + 1  # 88
N_SHIFTS, N_VELOCITIES = 100, 32
STEPS_PER_SECOND = 100  # 10 ms a step
NOTE_ON = 2
NOTE_OFF = NOTE_ON + N_PITCHES
TIME_SHIFT = NOTE_OFF + N_PITCHES
VELOCITY = TIME_SHIFT + N_SHIFTS
VOCAB_SIZE = VELOCITY + N_VELOCITIES  # 310
TICKS_PER_BEAT = 480
TEMPO = 500_000  # microseconds per beat (120 bpm): 960 ticks a second


class MidiError(ValueError):
    """A MIDI file we cannot read, or one without notes."""

    status_code = 400


@dataclass(frozen=True, order=True)
class Note:
    start: float  # seconds
    end: float
    pitch: int
    velocity: int


def velocity_bin(velocity: int) -> int:
    return min(N_VELOCITIES - 1, max(0, velocity) * N_VELOCITIES // 128)


def bin_velocity(bin_: int) -> int:
    """The velocity a bin decodes to: its centre."""
    return bin_ * 128 // N_VELOCITIES + 128 // N_VELOCITIES // 2


def describe(token: int) -> str:
    if token == PAD:
        return "<PAD>"
    if token == START:
        return "<S>"
    if NOTE_ON <= token < NOTE_OFF:
        return f"NOTE_ON_{token - NOTE_ON + MIN_PITCH}"
    if NOTE_OFF <= token < TIME_SHIFT:
        return f"NOTE_OFF_{token - NOTE_OFF + MIN_PITCH}"
    if TIME_SHIFT <= token < VELOCITY:
        return f"TIME_SHIFT_{(token - TIME_SHIFT + 1) * 10}ms"
    if VELOCITY <= token < VOCAB_SIZE:
        return f"VELOCITY_{token - VELOCITY}"
    raise ValueError(f"token {token} is outside the vocabulary of {VOCAB_SIZE}")


def encode(notes: list[Note], start_token: bool = True) -> list[int]:
    """Notes -> tokens. Pitches outside 21-108 are dropped (the piano range of the vocabulary)."""
    events: list[tuple[int, int, int, int]] = []  # (time step, order, kind, payload)
    for n in notes:
        if not MIN_PITCH <= n.pitch <= MAX_PITCH:
            continue
        on, off = round(n.start * STEPS_PER_SECOND), round(n.end * STEPS_PER_SECOND)
        off = max(off, on + 1)  # a note lasts at least one step
        events.append((off, 0, NOTE_OFF + n.pitch - MIN_PITCH, 0))  # offs before ons at one instant
        events.append((on, 1, NOTE_ON + n.pitch - MIN_PITCH, velocity_bin(n.velocity)))
    events.sort()
    tokens = [START] if start_token else []
    now, current_velocity = 0, None
    for step, _, token, vel in events:
        gap = step - now
        while gap > 0:
            shift = min(gap, N_SHIFTS)
            tokens.append(TIME_SHIFT + shift - 1)
            gap -= shift
        now = step
        if NOTE_ON <= token < NOTE_OFF and vel != current_velocity:
            tokens.append(VELOCITY + vel)
            current_velocity = vel
        tokens.append(token)
    return tokens


class NoteReader:
    """Tokens -> notes one token at a time: `feed` returns the notes a token ends, `close` the ones still
    sounding (ended at the last time step). decode() reads a whole list; a stream reads as the tokens come."""

    def __init__(self) -> None:
        self.now, self.velocity = 0, bin_velocity(velocity_bin(64))
        self.open_notes: dict[int, tuple[int, int]] = {}

    def _end(self, pitch: int) -> Note:
        start, vel = self.open_notes.pop(pitch)
        return Note(start / STEPS_PER_SECOND, self.now / STEPS_PER_SECOND, pitch, vel)

    def feed(self, token: int) -> list[Note]:
        if TIME_SHIFT <= token < VELOCITY:
            self.now += token - TIME_SHIFT + 1
        elif VELOCITY <= token < VOCAB_SIZE:
            self.velocity = bin_velocity(token - VELOCITY)
        elif NOTE_ON <= token < NOTE_OFF:
            pitch = token - NOTE_ON + MIN_PITCH
            ended = [self._end(pitch)] if pitch in self.open_notes else []  # re-struck: close the sounding one
            self.open_notes[pitch] = (self.now, self.velocity)
            return ended
        elif NOTE_OFF <= token < TIME_SHIFT:
            pitch = token - NOTE_OFF + MIN_PITCH
            if pitch in self.open_notes:
                return [self._end(pitch)]
        return []

    def close(self) -> list[Note]:
        notes = [Note(start / STEPS_PER_SECOND, max(self.now, start + 1) / STEPS_PER_SECOND, pitch, vel)
                 for pitch, (start, vel) in self.open_notes.items()]  # fmt: skip
        self.open_notes.clear()
        return notes


def decode(tokens: list[int]) -> list[Note]:
    """Tokens -> notes. A NOTE_ON with no matching NOTE_OFF ends at the last time step."""
    reader = NoteReader()
    notes = [note for token in tokens for note in reader.feed(token)]
    return sorted(notes + reader.close())


def read_midi(data: bytes) -> list[Note]:
    """All notes of all tracks of a MIDI file, in seconds (tempo changes honoured by mido)."""
    import mido

    if not data:
        raise MidiError("the MIDI file is empty")
    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
        messages = list(midi)
    except (OSError, EOFError, ValueError, KeyError, IndexError) as exc:
        raise MidiError(f"not a readable MIDI file: {exc}") from None
    now = 0.0
    sounding: dict[tuple[int, int], tuple[float, int]] = {}
    notes = []
    for msg in messages:
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            sounding[(msg.channel, msg.note)] = (now, msg.velocity)
        elif msg.type in ("note_off", "note_on"):
            started = sounding.pop((msg.channel, msg.note), None)
            if started is not None:
                notes.append(Note(started[0], now, msg.note, started[1]))
    notes += [Note(start, now, pitch, vel) for (_, pitch), (start, vel) in sounding.items()]
    if not notes:
        raise MidiError("the MIDI file has no notes (an empty melody)")
    return sorted(notes)


def write_midi(notes: list[Note]) -> bytes:
    """One track at 120 bpm, 480 ticks a beat (960 ticks a second)."""
    import mido

    ticks = TICKS_PER_BEAT * 1_000_000 / TEMPO
    events = []
    for n in notes:
        events.append((round(n.start * ticks), 1, mido.Message("note_on", note=n.pitch, velocity=n.velocity)))
        events.append((round(n.end * ticks), 0, mido.Message("note_off", note=n.pitch, velocity=0)))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=TEMPO, time=0)])
    last = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - last))
        last = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT, tracks=[track])
    buf = io.BytesIO()
    midi.save(file=buf)
    return buf.getvalue()
