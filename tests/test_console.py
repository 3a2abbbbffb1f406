"""The web console in a real browser: Debian's chromium, driven by selenium, against a real stack serving tiny models
of every family (with a bearer token, which the page sends). Each panel runs on the model's own sample and is
checked against the API's answer to the same request; a screenshot of each goes to build/console/."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import requests
import torch

from bench.stack import ROOT, start_stack
from models.music_transformer.synth import RELEASE

pytestmark = pytest.mark.stack
TOKEN = "console-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHOTS = ROOT / "build" / "console"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1100",  # and Chromium's test camera, allowed without asking:
                  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, hpt_base) -> Path:
    """Tiny models of every family, built by their own builders (which write their samples), and a twin of
    yolov4 under yolov4_compiled (a copy: the console's comparison needs the pair, not a compiler run)."""
    from models.anomaly import model as anomaly_model
    from models.anomaly.generate import make_dataset
    from models.anomaly.train import train
    from models.credit_risk.build import build as build_credit
    from models.music_transformer.build import export as export_music
    from models.music_transformer.model import Config, MusicTransformer, save
    from models.yolov4.build import export as export_yolo
    from models.yolov4.network import build as build_yolo

    root = tmp_path_factory.mktemp("console")
    models = root / "model"
    shutil.copytree(hpt_base, models / "half_plus_three")
    export_yolo(models / "yolov4", build_yolo(width=0.125, size=160, seed=4), 160)
    shutil.copytree(models / "yolov4", models / "yolov4_compiled")
    make_dataset(root / "anomaly_data", 20, 10, seed=3)
    make_dataset(root / "project_uploads", 20, 10, seed=11)  # what a user uploads into a project from the page
    train(root / "anomaly_data", models / "anomaly", root / "reports", [16, 16, 224, 224],
          geometry=anomaly_model.Geometry.fast())  # fmt: skip
    build_credit(models / "credit_risk", root / "reports")
    torch.manual_seed(0)
    save(MusicTransformer(Config.tiny()), root / "tiny.pt")
    export_music(root / "tiny.pt", models / "music_transformer")
    return models


@pytest.fixture(scope="module")
def stack(model_dir, tmp_path_factory):
    stack = start_stack(model_dir, tmp_path_factory.mktemp("run"), SAGESTACK_CONSOLE="true",
                        SAGESTACK_AUTH_TOKEN=TOKEN, SAGEMAKER_TFS_DEFAULT_MODEL_NAME="half_plus_three",
                        SAGESTACK_PROJECTS_DIR=str(tmp_path_factory.mktemp("projects")))  # fmt: skip
    yield stack
    assert stack.stop() == 0


@pytest.fixture(scope="module")
def browser(stack):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="sagestack-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                              options=options)  # fmt: skip
    driver.get(stack.url + "/console/")
    token = driver.find_element("id", "token")
    token.send_keys(TOKEN)
    driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", token)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(condition, timeout: float = 120, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s")


def open_panel(browser, model: str):
    wait_for(lambda: browser.find_elements("css selector", f'nav#tabs button[data-model="{model}"]'),
             what=f"the {model} tab")  # fmt: skip
    browser.find_element("css selector", f'nav#tabs button[data-model="{model}"]').click()
    return wait_for(lambda: browser.find_elements("css selector", f'#panel section[data-model="{model}"]'))[0]


def run(browser, section, action: str = "run", timeout: float = 180) -> str:
    """Click one of the panel's buttons; wait for the answer (or the error) it shows; the section's state."""
    before = int(section.get_attribute("data-runs") or 0)
    section.find_element("css selector", f'[data-role="{action}"]').click()
    wait_for(lambda: int(section.get_attribute("data-runs") or 0) > before, timeout, f"{action} to finish")
    return section.get_attribute("data-state")


def subtab(section, name: str) -> None:
    section.find_element("css selector", f'.subtabs button[data-tab="{name}"]').click()
    assert section.get_attribute("data-tab") == name


def type_into(section, selector: str, text: str) -> None:
    field = section.find_element("css selector", selector)
    field.clear()
    field.send_keys(text)


def pick_sample(browser, section, name: str) -> None:
    from selenium.webdriver.support.ui import Select

    before = int(section.get_attribute("data-runs") or 0)
    select = section.find_element("css selector", '[data-role="samples"]')
    wait_for(lambda: select.find_elements("css selector", f'option[value="{name}"]'), what=f"sample {name}")
    Select(select).select_by_value(name)
    wait_for(lambda: int(section.get_attribute("data-runs") or 0) > before, what=f"sample {name} to load")
    assert section.get_attribute("data-state") == "done", error_text(section)


def error_text(section) -> str:
    return section.find_element("css selector", '[data-role="error"]').text


def sample_bytes(stack, model: str, name: str) -> bytes:
    r = requests.get(f"{stack.url}/samples/{model}/{name}", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return r.content


def invoke(stack, model: str, body: bytes, content_type: str, attrs: str = "", accept: str = "application/json"):
    custom = f"tfs-model-name={model}" + (f",{attrs}" if attrs else "")
    headers = {**AUTH, "Content-Type": content_type, "Accept": accept, "X-Amzn-SageMaker-Custom-Attributes": custom}
    return requests.post(stack.url + "/invocations", data=body, headers=headers, timeout=120)


def test_the_overview_lists_every_model_ready_with_its_backend(browser, stack):
    names = {"half_plus_three", "yolov4", "yolov4_compiled", "anomaly", "credit_risk", "music_transformer"}

    def ready_rows():
        rows = browser.find_elements("css selector", "#models tbody tr")
        cells = {r.get_attribute("data-model"): [td.text for td in r.find_elements("css selector", "td")] for r in rows}
        return cells if set(cells) == names and all(c[2] == "READY" for c in cells.values()) else None

    cells = wait_for(ready_rows, what="every model READY in the overview")
    assert cells["half_plus_three"][3] == "tensorflow" and cells["yolov4"][3] == "torchscript"
    assert "yolov4_compiled" in cells["yolov4"][4]
    browser.save_screenshot(str(SHOTS / "overview.png"))


def test_yolov4_draws_the_apis_boxes_and_compares_the_compiled_twin(browser, stack):
    section = open_panel(browser, "yolov4")
    pick_sample(browser, section, "china.jpg")
    assert run(browser, section) == "done", error_text(section)
    drawn = json.loads(section.get_attribute("data-boxes"))
    api = invoke(stack, "yolov4", sample_bytes(stack, "yolov4", "china.jpg"), "image/jpeg",
                 "conf_threshold=0.25,iou_threshold=0.45")  # fmt: skip
    assert drawn == api.json()
    assert run(browser, section, "compare") == "done", error_text(section)
    summary = section.find_element("css selector", '[data-role="summary"]').text
    assert "F1 1.000" in summary  # the twin is the same network: every detection agrees
    rows = section.find_elements("css selector", '[data-role="compare-table"] tbody tr')
    assert [r.find_elements("css selector", "td")[1].text for r in rows] == ["yolov4_compiled", "yolov4"]
    browser.save_screenshot(str(SHOTS / "yolov4.png"))


def test_anomaly_shows_the_verdict_and_score_the_api_gives(browser, stack):
    section = open_panel(browser, "anomaly")
    pick_sample(browser, section, "scratch.png")
    subtab(section, "inference")
    assert run(browser, section) == "done", error_text(section)
    shown = json.loads(section.get_attribute("data-answer"))
    api = invoke(stack, "anomaly", sample_bytes(stack, "anomaly", "scratch.png"), "image/png").json()
    assert shown["AnomalyScore"] == api["AnomalyScore"] and shown["IsAnomalous"] == api["IsAnomalous"]
    assert str(api["AnomalyScore"]) in section.find_element("css selector", '[data-role="summary"]').text
    browser.save_screenshot(str(SHOTS / "anomaly.png"))


def create_project(browser, section, name: str) -> None:
    wait_for(lambda: section.find_elements("css selector", '[data-role="project"] option'), what="the project list")
    type_into(section, '[data-role="project-name"]', name)
    assert run(browser, section, "create") == "done", error_text(section)


def set_roi(browser, section, roi: list[int]) -> None:
    for i, value in enumerate(roi):
        type_into(section, f'[data-roi="{i}"]', str(value))
    assert run(browser, section, "apply-roi") == "done", error_text(section)


def test_anomaly_a_project_trained_and_started_from_the_page_shows_its_mask(browser, stack, model_dir):
    """The Lookout PoC flow: a project, its ROI, 20 normal + 10 anomalous uploads, training with progress, then
    the trained version started (no restart) and run on a new image, as the API answers it."""
    from selenium.webdriver.support.ui import Select

    uploads = model_dir.parent / "project_uploads"
    section = open_panel(browser, "anomaly")
    create_project(browser, section, "boards")
    set_roi(browser, section, [16, 16, 224, 224])
    subtab(section, "training")
    for label in ("normal", "anomaly"):
        before = int(section.get_attribute("data-runs"))
        files = "\n".join(str(f) for f in sorted((uploads / label).iterdir()))
        section.find_element("css selector", f'[data-role="upload-{label}"]').send_keys(files)
        wait_for(lambda n=before: int(section.get_attribute("data-runs")) > n, what=f"the {label} uploads")
        assert section.get_attribute("data-state") == "done", error_text(section)
    assert json.loads(section.get_attribute("data-counts")) == {"normal": 20, "anomaly": 10}
    assert "224x224" in section.find_element("css selector", '[data-role="last-caption"]').text
    section.find_element("css selector", '[data-role="fast"]').click()
    assert run(browser, section, "train", timeout=400) == "done", error_text(section)
    evaluation = json.loads(section.get_attribute("data-evaluation"))
    described = requests.get(f"{stack.url}/projects/boards/models/1", headers=AUTH, timeout=10).json()
    assert evaluation == described["ModelDescription"]["Performance"]
    browser.save_screenshot(str(SHOTS / "anomaly_training.png"))

    subtab(section, "inference")
    Select(section.find_element("css selector", '[data-role="version"]')).select_by_value("1")
    try:
        started_and_detected(browser, section, stack)
    finally:  # the served model as it was, for the tests after this one
        requests.post(f"{stack.url}/projects/boards/models/1/stop", headers=AUTH, timeout=60)


def started_and_detected(browser, section, stack) -> None:
    assert run(browser, section, "start") == "done", error_text(section)
    hosting = json.loads(section.get_attribute("data-hosting"))
    assert hosting["Model"] == "anomaly" and hosting["Version"] == 2
    pick_sample(browser, section, "scratch.png")
    assert run(browser, section) == "done", error_text(section)
    shown = json.loads(section.get_attribute("data-answer"))
    api = invoke(stack, "anomaly", sample_bytes(stack, "anomaly", "scratch.png"), "image/png",
                 "tfs-model-version=2").json()  # fmt: skip
    assert shown["IsAnomalous"] and shown["BoundingBox"] == api["BoundingBox"]
    assert shown["AnomalyScore"] == api["AnomalyScore"] and shown["Threshold"] == api["Threshold"]
    browser.save_screenshot(str(SHOTS / "anomaly_inference.png"))
    assert run(browser, section, "stop") == "done", error_text(section)


def test_anomaly_the_camera_feeds_the_roi_tool_and_the_training_set(browser, stack):
    section = open_panel(browser, "anomaly")
    create_project(browser, section, "camera")
    assert run(browser, section, "camera") == "done", error_text(section)
    assert section.find_element("css selector", '[data-role="summary"]').text.startswith("camera: ")
    set_roi(browser, section, [10, 10, 100, 80])
    subtab(section, "training")
    assert run(browser, section, "add-normal") == "done", error_text(section)
    assert json.loads(section.get_attribute("data-counts")) == {"normal": 1, "anomaly": 0}
    assert "normal/00001.png, 100x80" in section.find_element("css selector", '[data-role="last-caption"]').text
    browser.save_screenshot(str(SHOTS / "anomaly_camera.png"))


def test_a_bad_file_shows_the_apis_error_beside_the_input(browser, stack, tmp_path):
    section = open_panel(browser, "anomaly")
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    section.find_element("css selector", '[data-role="file"]').send_keys(str(bad))
    subtab(section, "inference")
    state = run(browser, section)
    api = invoke(stack, "anomaly", bad.read_bytes(), "image/png")
    assert state == "error" and 400 <= api.status_code < 500
    assert error_text(section) == f"{api.status_code}: {api.json()['error']}"
    browser.save_screenshot(str(SHOTS / "error.png"))


def test_credit_risk_scores_the_prefilled_application_and_a_csv(browser, stack, tmp_path):
    section = open_panel(browser, "credit_risk")
    wait_for(lambda: len(section.find_elements("css selector", "form input")) >= 10, what="the prefilled form")
    assert run(browser, section) == "done", error_text(section)
    shown = json.loads(section.get_attribute("data-answer"))
    api = invoke(stack, "credit_risk", sample_bytes(stack, "credit_risk", "application.json"), "application/json")
    assert shown == api.json()["predictions"][0]
    assert "probability of high risk" in section.find_element("css selector", '[data-role="summary"]').text
    csv = tmp_path / "applications.csv"
    csv.write_bytes(sample_bytes(stack, "credit_risk", "applications.csv"))
    before = int(section.get_attribute("data-runs"))
    section.find_element("css selector", '[data-role="file"]').send_keys(str(csv))
    wait_for(lambda: int(section.get_attribute("data-runs")) > before, what="the CSV to be scored")
    assert len(section.find_elements("css selector", '[data-role="batch"] tbody tr')) == 5, error_text(section)
    report = json.loads(sample_bytes(stack, "credit_risk", "bias.json"))
    assert json.loads(section.get_attribute("data-bias")) == report["metrics"]  # the training report's bias
    assert section.find_element("css selector", '[data-role="bias"]').is_displayed()
    browser.save_screenshot(str(SHOTS / "credit_risk.png"))
    assert run(browser, section, "explain") == "error"  # this stack has no ExplainerConfig, and says so
    assert "no ExplainerConfig" in error_text(section)


def test_credit_risk_explains_a_decision_where_an_explainer_is_configured(browser, stack, model_dir, tmp_path):
    """Clarify's online explanations (SAGESTACK_ENDPOINT_CONFIG with an ExplainerConfig), as the API gives them."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "credit_risk").symlink_to(model_dir / "credit_risk")
    config = ROOT / "examples" / "credit_risk_explained.json"
    explained = start_stack(tmp_path / "model", tmp_path / "run", SAGESTACK_CONSOLE="true",
                            SAGESTACK_ENDPOINT_CONFIG=str(config))  # fmt: skip
    try:
        browser.get(explained.url + "/console/")
        section = open_panel(browser, "credit_risk")
        wait_for(lambda: len(section.find_elements("css selector", "form input")) >= 10, what="the prefilled form")
        assert run(browser, section, "explain") == "done", error_text(section)
        shown = json.loads(section.get_attribute("data-explanation"))
        record = json.loads(sample_bytes(stack, "credit_risk", "application.json"))["instances"][0]
        headers = {"Content-Type": "text/csv", "Accept": "text/csv", "X-Amzn-SageMaker-Enable-Explanations": "`true`"}
        api = requests.post(explained.url + "/invocations", data=",".join(map(str, record.values())) + "\n",
                            headers=headers, timeout=120).json()  # fmt: skip
        expected = [
            [f["feature_header"], f["attributions"][0]["attribution"][0]] for f in api["explanations"]["kernel_shap"][0]
        ]
        assert shown == expected and len(shown) == 20
        rows = section.find_elements("css selector", '[data-role="explanation"] tbody tr')
        assert len(rows) == 20
        browser.save_screenshot(str(SHOTS / "credit_risk_explained.png"))
    finally:
        browser.get(stack.url + "/console/")
        assert explained.stop() == 0


def test_music_streams_the_extension_into_a_piano_roll_with_a_midi_download(browser, stack):
    section = open_panel(browser, "music_transformer")
    pick_sample(browser, section, "twinkle_twinkle.mid")
    duration = section.find_element("css selector", '[data-param="extension_duration"]')
    duration.clear()
    duration.send_keys("2")
    assert run(browser, section) == "done", error_text(section)
    shown = json.loads(section.get_attribute("data-answer"))
    assert shown["notes"] >= shown["added_notes"] >= 0 and shown["notes"] > 0
    link = section.find_element("css selector", '[data-role="download"]')
    assert link.is_displayed() and link.get_attribute("href").startswith("blob:")
    assert run(browser, section, "play") == "done", error_text(section)
    attrs = "extension_duration=2,temperature=0.95,max_notes=400,max_polyphony=6,seed=0"
    melody = sample_bytes(stack, "music_transformer", "twinkle_twinkle.mid")
    notes = invoke(stack, "music_transformer", melody, "audio/midi", attrs, "application/json").json()["notes"]
    played = float(section.get_attribute("data-audio-seconds"))  # what the browser decoded from the WAV
    assert played == pytest.approx(max(n["end"] for n in notes) + RELEASE, abs=0.01)
    browser.save_screenshot(str(SHOTS / "music_transformer.png"))


def test_any_other_model_gets_a_json_editor_prefilled_from_its_signature(browser, stack):
    section = open_panel(browser, "half_plus_three")
    body = section.find_element("css selector", '[data-role="body"]')
    wait_for(lambda: '"instances"' in body.get_attribute("value"), what="the prefilled body")
    assert run(browser, section) == "done", error_text(section)
    api = invoke(stack, "half_plus_three", body.get_attribute("value").encode(), "application/json")
    assert json.loads(section.get_attribute("data-answer")) == api.json()
    browser.save_screenshot(str(SHOTS / "half_plus_three.png"))


def test_the_console_is_off_unless_asked_for(stack, model_dir, tmp_path):
    assert requests.get(stack.url + "/console", allow_redirects=False, timeout=5).status_code == 301
    assert requests.get(stack.url + "/console/console.js", timeout=5).headers["Content-Type"] == "text/javascript"
    plain = start_stack(model_dir / "half_plus_three", tmp_path / "run")
    try:
        r = requests.get(plain.url + "/console/", timeout=5)
        assert r.status_code == 404 and "error" in r.json()
    finally:
        assert plain.stop() == 0
