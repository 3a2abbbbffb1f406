"""The music transformer through the whole stack (tiny untrained model): MIDI in, MIDI/JSON/PNG out."""

from __future__ import annotations

import base64
import io
import json
import wave
from concurrent.futures import ThreadPoolExecutor

import boto3
import numpy as np
import pytest
import requests
import torch

from bench.stack import start_stack
from models.music_transformer import synth
from models.music_transformer.build import export
from models.music_transformer.melodies import melody
from models.music_transformer.model import Config, MusicTransformer, save
from models.music_transformer.tokens import read_midi, write_midi

pytestmark = pytest.mark.stack
TWINKLE = write_midi(melody("twinkle_twinkle"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("music")
    torch.manual_seed(0)
    save(MusicTransformer(Config.tiny()), root / "tiny.pt")
    export(root / "tiny.pt", root / "model" / "music_transformer")
    return root / "model"


@pytest.fixture(scope="module")
def stack(model_dir, tmp_path_factory):
    stack = start_stack(model_dir, tmp_path_factory.mktemp("run"))
    yield stack
    assert stack.stop() == 0


def post(stack, body: bytes, ctype: str = "audio/midi", attrs: str = "", accept: str = "audio/midi"):
    headers = {"Content-Type": ctype, "Accept": accept, "X-Amzn-SageMaker-Custom-Attributes": attrs}
    return requests.post(stack.url + "/invocations", data=body, headers=headers, timeout=120)


def test_midi_in_midi_out_starts_with_the_input(stack):
    r = post(stack, TWINKLE, attrs="tfs-model-name=music_transformer,extension_duration=4,seed=3")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "audio/midi"
    notes = read_midi(r.content)
    given = read_midi(TWINKLE)
    assert [(n.pitch, round(n.start, 2)) for n in notes[: len(given)]] == [(n.pitch, round(n.start, 2)) for n in given]
    end_of_input = max(n.end for n in given)
    added = [n for n in notes if n.start >= end_of_input - 1e-6]
    assert added and max(n.end for n in added) <= end_of_input + 4 + 0.02


def test_json_body_and_json_answer_are_deterministic(stack):
    body = {"midi": base64.b64encode(TWINKLE).decode(), "extension_duration": 3, "max_notes": 6, "seed": 11}
    first = requests.post(stack.url + "/invocations", json=body, headers={"Accept": "application/json"}, timeout=120)
    assert first.status_code == 200, first.text
    out = first.json()
    assert out["input_notes"] == 14 and 0 < out["added_notes"] <= 6
    assert len(out["tokens"]) == len(out["events"]) and out["parameters"]["seed"] == 11
    again = requests.post(stack.url + "/invocations", json=body, headers={"Accept": "application/json"}, timeout=120)
    assert again.json()["tokens"] == out["tokens"]


def test_wav_is_the_same_extension_rendered_as_sound(stack):
    attrs = "tfs-model-name=music_transformer,extension_duration=3,seed=7"
    r = post(stack, TWINKLE, attrs=attrs, accept="audio/wav")
    assert r.status_code == 200 and r.headers["Content-Type"] == "audio/wav"
    notes = post(stack, TWINKLE, attrs=attrs, accept="application/json").json()["notes"]
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, synth.RATE)
        seconds = w.getnframes() / w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert seconds == pytest.approx(max(n["end"] for n in notes) + synth.RELEASE, abs=1e-3)
    assert np.abs(samples).max() > 3000  # sound, not silence


def test_piano_roll_png(stack):
    r = post(stack, TWINKLE, attrs="extension_duration=2", accept="image/png")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("body", "ctype", "attrs", "status", "named"),
    [
        (b"MThd\x00\x00\x00\x06garbage", "audio/midi", "", 400, "MIDI"),
        (b"", "audio/midi", "", 400, "empty"),
        (write_midi([]), "audio/midi", "", 400, "no notes"),
        (TWINKLE, "audio/midi", "temperature=0", 400, "temperature"),
        (TWINKLE, "audio/midi", "extension_duration=45", 400, "extension_duration"),
        (TWINKLE, "audio/midi", "max_notes=many", 400, "max_notes"),
        (b'{"midi": "%%%"}', "application/json", "", 400, "midi"),
        (b'{"seed": 1}', "application/json", "", 400, "midi"),
        (b"{not json", "application/json", "", 400, "midi"),
        (TWINKLE, "text/csv", "", 415, "audio/midi"),
    ],
)
def test_bad_requests_are_named(stack, body, ctype, attrs, status, named):
    r = post(stack, body, ctype, attrs)
    assert r.status_code == status, r.text
    assert named in r.json()["error"]


def test_unacceptable_accept(stack):
    r = post(stack, TWINKLE, accept="text/csv")
    assert r.status_code == 406 and "audio/midi" in r.json()["error"]


def test_continuous_batching_gives_each_request_its_own_extension(stack, model_dir, tmp_path):
    """SAGEMAKER_TFS_ENABLE_BATCHING=true: concurrent extensions share decoding steps; each answer is as alone."""
    bodies = [
        {"midi": base64.b64encode(write_midi(melody(name))).decode(), "extension_duration": d, "seed": seed}
        for name, d, seed in (("twinkle_twinkle", 6, 1), ("ode_to_joy", 2, 2), ("frere_jacques", 4, 3)) * 2
    ]
    batched = start_stack(model_dir, tmp_path, SAGEMAKER_TFS_ENABLE_BATCHING="true", SAGEMAKER_TFS_MAX_BATCH_SIZE="4")
    try:

        def tokens(url: str, body: dict) -> list[int]:
            r = requests.post(url + "/invocations", json=body, headers={"Accept": "application/json"}, timeout=120)
            assert r.status_code == 200, r.text
            return r.json()["tokens"]

        with ThreadPoolExecutor(len(bodies)) as pool:
            together = list(pool.map(lambda body: tokens(batched.url, body), bodies))
        assert together == [tokens(stack.url, body) for body in bodies]
    finally:
        assert batched.stop() == 0


def test_jsonlines_streams_each_note_then_the_midi_the_plain_answer_gives(stack):
    attrs = "tfs-model-name=music_transformer,extension_duration=4,seed=5"
    with requests.post(stack.url + "/invocations", data=TWINKLE, stream=True, timeout=120,
                       headers={"Content-Type": "audio/midi", "Accept": "application/jsonlines",
                                "X-Amzn-SageMaker-Custom-Attributes": attrs}) as r:  # fmt: skip
        assert r.status_code == 200 and r.headers["Transfer-Encoding"] == "chunked"
        lines = [json.loads(line) for line in r.iter_lines()]
    *notes, last = lines
    assert notes and all(set(line) == {"note"} for line in notes)
    whole = post(stack, TWINKLE, attrs=attrs)
    assert base64.b64decode(last["midi"]) == whole.content  # the same extension, the same file
    added = {(n["pitch"], round(n["start"], 2)) for n in (line["note"] for line in notes)}
    end_of_input = max(n.end for n in read_midi(TWINKLE))
    expected = {(n.pitch, round(n.start, 2)) for n in read_midi(whole.content) if n.start >= end_of_input - 1e-6}
    assert expected <= added and last["added_notes"] == len(notes)
    events = boto3.client("sagemaker-runtime", endpoint_url=stack.url, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x").invoke_endpoint_with_response_stream(
        EndpointName="music", Body=TWINKLE, ContentType="audio/midi", Accept="application/jsonlines",
        CustomAttributes=attrs)  # fmt: skip
    streamed = b"".join(e["PayloadPart"]["Bytes"] for e in events["Body"])
    assert [json.loads(line) for line in streamed.splitlines()] == lines


def test_a_listener_that_hangs_up_leaves_the_stack_serving(model_dir, tmp_path):
    """One batch slot: after a long streamed extension whose client leaves at the first note, the runtime and the
    worker go on serving (that the slot is given up is tested on the scheduler itself, test_music_generate)."""
    batched = start_stack(model_dir, tmp_path, SAGEMAKER_TFS_ENABLE_BATCHING="true", SAGEMAKER_TFS_MAX_BATCH_SIZE="1")
    try:
        attrs = "extension_duration=30,max_notes=200,seed=1"
        headers = {"Content-Type": "audio/midi", "Accept": "application/jsonlines",
                   "X-Amzn-SageMaker-Custom-Attributes": attrs}  # fmt: skip
        with requests.post(batched.url + "/invocations", data=TWINKLE, headers=headers, stream=True, timeout=120) as r:
            assert "note" in json.loads(next(r.iter_lines()))
        r = post(batched, TWINKLE, attrs="extension_duration=2,seed=2")
        assert r.status_code == 200 and read_midi(r.content)
        assert requests.get(batched.url + "/ping", timeout=5).status_code == 200
    finally:
        assert batched.stop() == 0
