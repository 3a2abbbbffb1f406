"""Music transformer handlers: a MIDI melody in, the melody plus its extension out.

Takes audio/midi (parameters as custom attributes, `temperature=1.1,max_notes=50`) or application/json
`{"midi": <base64>, "temperature": .., ...}`. Parameters are DeepComposer's (see music_transformer.params): a bad
one is a 400 naming it, checked here before the runtime runs the whole generation loop in one
Predict call. Accept: audio/midi (default), application/json (notes and tokens), image/png (a piano roll), audio/wav
(the melody rendered to sound, which browsers play), or application/jsonlines, which streams: a line per note as the
runtime samples it (PredictStream), then the MIDI.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Iterator

import numpy as np
from handler_kit import UnsupportedType, json_body, json_response, model_attributes, negotiate
from music_transformer.params import ParameterError, as_tensors, parse
from music_transformer.pianoroll import piano_roll_png
from music_transformer.synth import wav_bytes
from music_transformer.tokens import (
    STEPS_PER_SECOND,
    TIME_SHIFT,
    VELOCITY,
    MidiError,
    Note,
    NoteReader,
    decode,
    describe,
    encode,
    read_midi,
    write_midi,
)

MIDI_TYPES = ("audio/midi", "audio/x-midi", "audio/mid")
JSONLINES = "application/jsonlines"
WAV = "audio/wav"
RESPONSE_TYPES = ("audio/midi", "application/json", "image/png", WAV, "audio/x-wav", "audio/wave", JSONLINES)


def _request(body: bytes, context) -> tuple[bytes, dict]:
    if context.request_content_type in MIDI_TYPES:
        return body, model_attributes(context.custom_attributes)
    if context.request_content_type != "application/json":
        raise UnsupportedType(f"the music model takes {', '.join(MIDI_TYPES)} or application/json")
    request = json_body(body, 'JSON (send {"midi": <base64 MIDI>, ...parameters})')
    try:
        midi = base64.b64decode(request.pop("midi"), validate=True)
    except (AttributeError, binascii.Error, TypeError) as exc:
        raise ParameterError(f'send {{"midi": <base64 MIDI>, ...parameters}}: {exc}') from None
    except KeyError:
        raise ParameterError('the JSON body needs "midi" (a base64 MIDI file)') from None
    return midi, request


def handler(data, context):
    accept = negotiate(context.accept_header, RESPONSE_TYPES, "audio/midi")
    midi, values = _request(data.read(), context)
    params = parse(values)
    notes = [n for n in read_midi(midi) if n.start < params.input_duration]
    if not notes:
        raise MidiError(f"the melody has no notes in its first {params.input_duration} s (input_duration)")
    tokens = encode([Note(n.start, min(n.end, params.input_duration), n.pitch, n.velocity) for n in notes])
    inputs = {"tokens": np.asarray([tokens], dtype=np.int32), **as_tensors(params)}
    if accept == JSONLINES:
        return _stream(tokens, params, context.predict_stream(inputs)), JSONLINES
    generated = context.predict(inputs)["tokens"].reshape(-1).astype(int).tolist()
    return _answer(tokens, generated, params, accept)


def _note(n: Note) -> dict:
    return {"start": n.start, "end": n.end, "pitch": n.pitch, "velocity": n.velocity}


def _stream(tokens: list[int], params, parts) -> Iterator[str]:
    """One JSON line per added note as soon as its end is sampled (`{"note": ...}`), then the whole melody as
    a last line (`{"midi": <base64 MIDI>, "notes": [every note, the input's too], ...}`, the same file Accept:
    audio/midi answers). Closing this (the
    client went away) closes `parts`, which stops the generation in the runtime."""
    reader = NoteReader()
    for token in tokens:
        reader.feed(token)  # the input's notes: not sent again
    boundary, generated, added = reader.now / STEPS_PER_SECOND, [], 0
    with contextlib.closing(parts):
        for part in parts:
            for token in part["tokens"].reshape(-1).astype(int).tolist():
                generated.append(token)
                for note in reader.feed(token):
                    added += 1
                    yield json.dumps({"note": _note(note)}) + "\n"
    for note in reader.close():
        added += 1
        yield json.dumps({"note": _note(note)}) + "\n"
    notes = decode(tokens + generated)
    yield json.dumps({"midi": base64.b64encode(write_midi(notes)).decode(), "added_notes": added,
                      "extension_starts_at": boundary, "notes": [_note(n) for n in notes], "tokens": generated,
                      "parameters": params.as_dict()}) + "\n"  # fmt: skip


def _answer(tokens: list[int], generated: list[int], params, accept: str):
    notes = decode(tokens + generated)
    boundary = sum(t - TIME_SHIFT + 1 for t in tokens if TIME_SHIFT <= t < VELOCITY) / STEPS_PER_SECOND
    given = [n for n in notes if n.start < boundary]
    added = [n for n in notes if n.start >= boundary]
    if accept == "image/png":
        return piano_roll_png(given, added, f"input + {params.extension_duration:g} s extension"), "image/png"
    if accept in (WAV, "audio/x-wav", "audio/wave"):
        return wav_bytes(notes), WAV
    if accept == "application/json":
        return json_response(
            {
                "notes": [_note(n) for n in notes],
                "input_notes": len(given),
                "added_notes": len(added),
                "extension_starts_at": boundary,
                "tokens": generated,
                "events": [describe(t) for t in generated],
                "parameters": params.as_dict(),
            }
        )
    return write_midi(notes), "audio/midi"
