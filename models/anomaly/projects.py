"""Lookout-for-Vision-style projects: a labelled data set, training jobs, and trained versions put into service.

A project is a folder under SAGESTACK_PROJECTS_DIR:
```
<project>/project.json                    name, creation time, region of interest, frame size
<project>/dataset/{normal,anomaly}/*.png  the images, cropped to the ROI when added (models.anomaly.dataset's format:
<project>/dataset/manifest.json           labels from folder names, defect kinds in the manifest)
<project>/models/<v>/status.json          the training job's state and progress (TrainingStatus); .running its lock
<project>/models/<v>/model/               what `sagestack anomaly train` exported; metrics.json, gallery.png beside it
<project>/models/<v>/hosting.json         where a started version serves: {"Model": "anomaly", "Version": N}
```
Starting a version copies it into the served anomaly model's folder as its next version and names it in that
model's code/config.json; the caller then has the stack serve the folder as it is now, as TF Serving's file-system
poll would. Stopping takes it away again. States are Lookout's: TRAINING, TRAINED, TRAINING_FAILED, HOSTED.
All state is in files, so every gateway worker sees the same projects; a lock file serialises the changes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from models.anomaly import dataset as ds
from models.anomaly.preprocess import ImageError, apply_roi
from server.errors import ApiError
from server.handler_kit import decode_image
from server.modeldir import version_dirs

PROJECT_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}")  # Lookout's rule for project names
LABELS = ("normal", "anomaly")
KIND = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
IMAGE_FILE = re.compile(r"[0-9]{5}\.png")
RUNNING = ".running"  # a training job's lock file
TRAINING, TRAINED, TRAINING_FAILED, HOSTED = "TRAINING", "TRAINED", "TRAINING_FAILED", "HOSTED"
ROOT = Path(__file__).resolve().parents[2]  # where the `models` package is importable from (the trainer's path)


def _read(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def _write(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)  # readers in other workers never see half a file


class TrainingStatus:
    """A training job's status file: the trainer (`sagestack anomaly train --status`) writes it, the API reads it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def update(self, **fields: Any) -> None:
        _write(self.path, {**(_read(self.path) or {}), **fields, "LastUpdated": time.time()})

    def progress(self, phase: str, done: int, total: int) -> None:
        self.update(Status=TRAINING, StatusMessage=phase, Progress={"Phase": phase, "Done": done, "Total": total})

    def failed(self, message: str) -> None:
        self.update(Status=TRAINING_FAILED, StatusMessage=message)

    def trained(self, result: dict[str, Any]) -> None:
        performance = {"Precision": result["precision"], "Recall": result["recall"], "F1Score": result["f1"],
                       "AUROC": result["auroc"]}  # fmt: skip
        self.update(Status=TRAINED, StatusMessage="training completed", Performance=performance, Evaluation=result)


class Projects:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._local = threading.Lock()  # one greenlet of this process at a time reaches the file lock

    # ---- projects ----------------------------------------------------------------------------------
    def create(self, name: str) -> dict[str, Any]:
        if not isinstance(name, str) or not PROJECT_NAME.fullmatch(name):
            raise ApiError(400, f"ProjectName {name!r}: 1-255 letters, digits, '-' and '_', not starting with '-'")
        with self._locked():
            folder = self.root / name
            if folder.exists():
                raise ApiError(409, f"project '{name}' already exists")
            for label in LABELS:
                (folder / "dataset" / label).mkdir(parents=True)
            (folder / "models").mkdir()
            meta = {"ProjectName": name, "CreationTimestamp": time.time(), "Roi": None, "ImageSize": None}
            _write(folder / "project.json", meta)
        return meta

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "project.json").is_file())

    def describe(self, name: str) -> dict[str, Any]:
        meta = self._meta(name)
        counts = {label: len(self._images(name, label)) for label in LABELS}
        last = _read(self.root / name / "dataset" / "last.json")
        return meta | {
            "Dataset": {
                "Counts": counts,
                "MinimumCounts": {"normal": ds.MIN_NORMAL, "anomaly": ds.MIN_ANOMALY},
                "ReadyToTrain": counts["normal"] >= ds.MIN_NORMAL and counts["anomaly"] >= ds.MIN_ANOMALY,
                "Kinds": self._kinds(name),
                "Last": last,
            },
            "Models": [self.model(name, v) for v in self._versions(name)],
        }

    def delete(self, name: str) -> None:
        with self._locked():
            self._meta(name)
            busy = [m for v in self._versions(name) if (m := self.model(name, v))["Status"] in (TRAINING, HOSTED)]
            if busy:
                versions = ", ".join(f"{m['ModelVersion']} ({m['Status']})" for m in busy)
                raise ApiError(409, f"project '{name}' has versions training or hosted ({versions}); stop them")
            shutil.rmtree(self.root / name)

    def set_roi(self, name: str, roi: Any) -> dict[str, Any]:
        """The region of interest (x, y, w, h in frame pixels) every added image is cropped to; null for none."""
        if roi is not None and not (
            isinstance(roi, list) and len(roi) == 4 and all(isinstance(v, int) and v >= 0 for v in roi)
        ):
            raise ApiError(400, f"Roi must be [x, y, width, height] in whole pixels, or null; got {roi!r}")
        if roi is not None and (roi[2] < 8 or roi[3] < 8):
            raise ApiError(400, f"the region of interest {roi} is smaller than 8x8 pixels")
        with self._locked():
            meta = self._meta(name)
            held = sum(len(self._images(name, label)) for label in LABELS)
            if held and roi != meta["Roi"]:
                raise ApiError(409, f"project '{name}' holds {held} images cropped to {meta['Roi']}; the region "
                                        "of interest changes only while its data set is empty")  # fmt: skip
            meta["Roi"] = roi
            _write(self.root / name / "project.json", meta)
        return meta

    # ---- the data set ------------------------------------------------------------------------------
    def add_image(self, name: str, label: str, data: bytes, kind: str | None, max_pixels: int) -> dict[str, Any]:
        if label not in LABELS:
            raise ApiError(404, f"label {label!r}: images are 'normal' or 'anomaly'")
        if kind is not None and (label != "anomaly" or not KIND.fullmatch(kind)):
            raise ApiError(400, f"kind {kind!r}: an anomaly's defect kind, 1-32 of a-z, 0-9, '-', '_'")
        self._meta(name)
        frame = decode_image(data, max_pixels)
        with self._locked():
            meta = self._meta(name)
            if meta["ImageSize"] is not None and list(frame.size) != meta["ImageSize"]:
                w, h = meta["ImageSize"]
                raise ApiError(400, f"the image is {frame.width}x{frame.height}; project '{name}' takes "
                                        f"{w}x{h} images (the size of its first image)")  # fmt: skip
            try:
                crop = apply_roi(frame, meta["Roi"])
            except ImageError as exc:
                raise ApiError(400, str(exc)) from None
            folder = self.root / name / "dataset" / label
            file = f"{len(self._images(name, label)) + 1:05d}.png"
            crop.save(folder / file, format="PNG")
            if kind is not None:
                manifest = self.root / name / "dataset" / "manifest.json"
                kinds = _read(manifest, {"images": {}})
                kinds["images"][f"{label}/{file}"] = {"kind": kind}
                _write(manifest, kinds)
            if meta["ImageSize"] is None:
                meta["ImageSize"] = list(frame.size)
                _write(self.root / name / "project.json", meta)
            last = {"Label": label, "File": file, "Kind": kind, "Size": list(crop.size)}
            _write(self.root / name / "dataset" / "last.json", last)
        return last | {"Counts": {lb: len(self._images(name, lb)) for lb in LABELS}}

    def image(self, name: str, label: str, file: str) -> Path:
        self._meta(name)
        path = self.root / name / "dataset" / label
        if label not in LABELS or not IMAGE_FILE.fullmatch(file) or not (path / file).is_file():
            raise ApiError(404, f"project '{name}' has no image {label}/{file}")
        return path / file

    # ---- training ----------------------------------------------------------------------------------
    def train(self, name: str, fast: bool = False) -> dict[str, Any]:
        """Start a training job in the background (the auto-split keeps a fifth of each label for the test)."""
        with self._locked():
            described = self.describe(name)
            counts = described["Dataset"]["Counts"]
            if not described["Dataset"]["ReadyToTrain"]:
                raise ApiError(400, f"training needs at least {ds.MIN_NORMAL} normal and {ds.MIN_ANOMALY} "
                                        f"anomalous images; project '{name}' has {counts['normal']} normal and "
                                        f"{counts['anomaly']} anomalous")  # fmt: skip
            running = [m["ModelVersion"] for m in described["Models"] if m["Status"] == TRAINING]
            if running:
                raise ApiError(409, f"project '{name}' is already training version {running[0]}")
            version = max(self._versions(name), default=0) + 1
            folder = self.root / name / "models" / str(version)
            folder.mkdir(parents=True)
            status = TrainingStatus(folder / "status.json")
            status.update(ModelVersion=str(version), CreationTimestamp=time.time(), Fast=fast)
            status.progress("starting", 0, counts["normal"])
            running = open(folder / RUNNING, "wb")  # the trainer holds it, locked, until it exits
            fcntl.flock(running, fcntl.LOCK_EX)
            command = [sys.executable, "-m", "models.anomaly.train", str(self.root / name / "dataset"),
                       "--out", str(folder / "model"), "--reports", str(folder), "--status", str(status.path),
                       *(["--fast"] if fast else [])]  # fmt: skip
            path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
            with running, open(folder / "training.log", "wb") as job_log:
                job = subprocess.Popen(command, stdout=job_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=os.environ | {"PYTHONPATH": path}, cwd=folder,
                                       pass_fds=(running.fileno(),))  # fmt: skip
            threading.Thread(target=job.wait, name=f"train-{name}-{version}", daemon=True).start()  # reaps it
        return self.model(name, version)

    def model(self, name: str, version: int) -> dict[str, Any]:
        folder = self._model_folder(name, version)
        status = _read(folder / "status.json") or {"Status": TRAINING_FAILED, "StatusMessage": "no status"}
        if status["Status"] == TRAINING and not _running(folder / RUNNING):
            status |= {
                "Status": TRAINING_FAILED,
                "StatusMessage": f"the training process exited; see {folder}/training.log",
            }
        hosting = _read(folder / "hosting.json")
        if hosting is not None:
            attributes = f"tfs-model-name={hosting['Model']},tfs-model-version={hosting['Version']}"
            status |= {"Status": HOSTED, "Hosting": hosting | {"CustomAttributes": attributes}}
        return status | {"ModelVersion": str(version)}

    def gallery(self, name: str, version: int) -> Path:
        path = self._model_folder(name, version) / "gallery.png"
        if not path.is_file():
            raise ApiError(404, f"project '{name}' version {version} has no evaluation gallery (yet)")
        return path

    # ---- hosting -----------------------------------------------------------------------------------
    def start(self, name: str, version: int, served: str, base: Path, refresh: Callable[[], Any]) -> dict[str, Any]:
        """Serve a TRAINED version as the next version of the model `served` (its folder `base`)."""
        with self._locked():
            described = self.model(name, version)
            if described["Status"] == HOSTED:
                return described
            if described["Status"] != TRAINED:
                raise ApiError(409, f"project '{name}' version {version} is {described['Status']}; "
                                        "only a TRAINED version starts")  # fmt: skip
            config_file = base / "code" / "config.json"
            config = _read(config_file)
            if config is None or "versions" not in config:
                raise ApiError(409, f"model '{served}' is not an anomaly model (no code/config.json in {base})")
            folder = self._model_folder(name, version)
            trained = _read(folder / "model" / "code" / "config.json")["versions"]["1"]
            meta = self._meta(name)
            number = max(max(version_dirs(base), default=0) + 1, config.get("next_version", 0))  # never reused
            incoming = base / f".incoming-{number}"
            shutil.rmtree(incoming, ignore_errors=True)
            shutil.copytree(folder / "model" / "1", incoming)
            # The images were cropped when they were added: the served version crops camera frames the same way.
            config["versions"][str(number)] = trained | {"roi": meta["Roi"], "image_size": meta["ImageSize"],
                                                         "project": name, "project_version": version}  # fmt: skip
            config["next_version"] = number + 1
            _write(config_file, config)
            incoming.rename(base / str(number))
            try:
                refresh()
            except Exception:
                shutil.rmtree(base / str(number), ignore_errors=True)
                self._forget(config_file, number)
                _resync(refresh)
                raise
            _write(folder / "hosting.json", {"Model": served, "Version": number, "Started": time.time()})
        return self.model(name, version)

    def stop(self, name: str, version: int, base_of: Callable[[str], Path | None],
             refresh: Callable[[str], Any]) -> dict[str, Any]:  # fmt: skip
        """Take a hosted version out of service. Only the served version this project started is removed: for a
        model rebuilt since, or no longer served, the hosting is just forgotten."""
        with self._locked():
            folder = self._model_folder(name, version)
            hosting = _read(folder / "hosting.json")
            if hosting is None:
                raise ApiError(409, f"project '{name}' version {version} is not hosted")
            model, number, base = hosting["Model"], hosting["Version"], base_of(hosting["Model"])
            config_file = base / "code" / "config.json" if base is not None else None
            entry = ((_read(config_file) or {}).get("versions") or {}).get(str(number)) if config_file else None
            if (
                base is not None
                and config_file is not None
                and entry is not None
                and ((entry.get("project"), entry.get("project_version")) == (name, version))
            ):
                leaving = base / f".stopped-{number}"
                if (base / str(number)).is_dir():
                    (base / str(number)).rename(leaving)
                try:
                    refresh(model)
                except Exception:
                    if leaving.is_dir():
                        leaving.rename(base / str(number))
                    _resync(lambda: refresh(model))
                    raise
                shutil.rmtree(leaving, ignore_errors=True)
                self._forget(config_file, number)
            (folder / "hosting.json").unlink()
        return self.model(name, version)

    # ---- helpers -----------------------------------------------------------------------------------
    def _meta(self, name: str) -> dict[str, Any]:
        meta = _read(self.root / name / "project.json") if PROJECT_NAME.fullmatch(name) else None
        if meta is None:
            raise ApiError(404, f"no project '{name}' (projects: {self.names()})")
        return meta

    def _images(self, name: str, label: str) -> list[Path]:
        folder = self.root / name / "dataset" / label
        return sorted(p for p in folder.iterdir() if IMAGE_FILE.fullmatch(p.name)) if folder.is_dir() else []

    def _kinds(self, name: str) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for entry in (_read(self.root / name / "dataset" / "manifest.json") or {"images": {}})["images"].values():
            kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
        return kinds

    def _versions(self, name: str) -> list[int]:
        folder = self.root / name / "models"
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []

    def _model_folder(self, name: str, version: int) -> Path:
        self._meta(name)
        folder = self.root / name / "models" / str(version)
        if not (folder / "status.json").is_file():
            raise ApiError(404, f"project '{name}' has no model version {version} (versions: {self._versions(name)})")
        return folder

    @staticmethod
    def _forget(config_file: Path, number: int) -> None:
        config = _read(config_file)
        if config is not None and config["versions"].pop(str(number), None) is not None:
            _write(config_file, config)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Across greenlets (the local lock) and across gateway workers (the file lock, tried without blocking the
        worker's other requests)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._local, open(self.root / ".lock", "a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _resync(refresh: Callable[[], Any]) -> None:
    """After a failed change is undone on disk, have the stack serve the folder as it is again (best effort)."""
    try:
        refresh()
    except Exception:  # the first failure is the one the client hears about
        pass


def _running(lock: Path) -> bool:
    """Whether the training job still runs: it holds this file's lock from its start until it exits, however it
    ends (a pid could be reused, or belong to a zombie)."""
    try:
        with open(lock, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except FileNotFoundError:
        return False
    return False
