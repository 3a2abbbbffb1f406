"""The model directory (SageMaker's /opt/ml/model layout): the one module that reads and writes it.

`<dir>/<name>/<version>/saved_model.pb` is a TF SavedModel; `<dir>/<name>/<version>/compiled/
metadata.json` is any other artifact, whose metadata names its runtime. `<dir>/<name>/code/` holds that
model's handlers (`inference.py`), its library as the package `code/lib/<name>/`, and the handler kit as
`code/lib/handler_kit.py`; `<dir>/code/` applies to every model that has none of its own. A directory that
directly holds numeric versions is one model named after the directory. Builders and the compiler write
through `fresh_version`, `write_metadata` and `export_code`, readers through the rest.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

METADATA = Path("compiled") / "metadata.json"
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # what a served model may be called
HANDLER_KIT = Path(__file__).with_name("handler_kit.py")
SAMPLES = "samples"  # code/samples/: the model's sample requests, and figures of its training a person looks at
SAMPLE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.[a-z0-9]{1,8}")


class ModelDirError(ValueError):
    """No servable version where one was promised."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    base_path: Path
    kind: str
    versions: tuple[int, ...]
    code_dir: Path | None


def version_dirs(base: Path) -> dict[int, Path]:
    """Numeric subdirectories of a model base path, as TF Serving's file-system source sees them."""
    if not base.is_dir():
        return {}
    return {int(p.name): p for p in base.iterdir() if p.is_dir() and p.name.isdigit()}


def fresh_version(base: Path, version: int = 1) -> Path:
    """`<base>/<version>`, empty: a rebuilt version keeps nothing of the last build."""
    version_dir = base / str(version)
    shutil.rmtree(version_dir, ignore_errors=True)
    version_dir.mkdir(parents=True)
    return version_dir


def write_metadata(version_dir: Path, meta: dict) -> Path:
    """`compiled/metadata.json`: at least "runtime" (a key of server.runtimes.RUNTIMES) and "artifact"."""
    for key in ("runtime", "artifact"):
        if key not in meta:
            raise ModelDirError(f"metadata for {version_dir} needs '{key}'")
    path = version_dir / METADATA
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=1))
    return path


def read_metadata(version_dir: Path) -> dict:
    return json.loads((version_dir / METADATA).read_text())


def export_code(base: Path, name: str, handler: Path, lib: Iterable[Path] = (), keep: bool = False,
                samples: Mapping[str, bytes] | None = None) -> Path:  # fmt: skip
    """`<base>/code/`: `handler` as inference.py, the `lib` modules as the package `code/lib/<name>/`
    (handlers import `from <name> import boxes`), the handler kit, and the model's sample requests. `keep` leaves
    other files there (a model that adds versions one at a time keeps its config.json)."""
    code = base / "code"
    if not keep:
        shutil.rmtree(code, ignore_errors=True)
    package = code / "lib" / name
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f'"""{name}\'s handler library (shipped by sagestack build)."""\n')
    for module in lib:
        shutil.copy(module, package / module.name)
    shutil.copy(HANDLER_KIT, code / "lib" / HANDLER_KIT.name)
    shutil.copy(handler, code / "inference.py")
    write_samples(code, samples or {})
    return code


def write_samples(code: Path, samples: Mapping[str, bytes]) -> None:
    """`code/samples/<file>`: request bodies that show what the model takes (the console offers them; the file's
    suffix says its content type)."""
    folder = code / SAMPLES
    shutil.rmtree(folder, ignore_errors=True)
    if samples:
        folder.mkdir(parents=True)
    for file, body in samples.items():
        if not SAMPLE_FILE.fullmatch(file):
            raise ModelDirError(f"sample file name {file!r}: letters, digits, '.', '_', '-' and a suffix")
        (folder / file).write_bytes(body)


def sample_files(code: Path | None) -> list[Path]:
    """The model's sample requests, by name (none without a code directory)."""
    folder = code / SAMPLES if code is not None else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(f for f in folder.iterdir() if f.is_file() and SAMPLE_FILE.fullmatch(f.name))


def version_kind(version_dir: Path) -> str | None:
    """Which runtime serves this version directory, or None if it holds no model."""
    if (version_dir / "saved_model.pb").is_file():
        return "tensorflow"
    if (version_dir / METADATA).is_file():
        return read_metadata(version_dir)["runtime"]
    return None


def model_spec(name: str, base: Path, shared_code: Path | None = None) -> ModelSpec:
    kinds = {v: kind for v, path in version_dirs(base).items() if (kind := version_kind(path))}
    if not kinds:
        raise ModelDirError(f"model '{name}': no version directory (<version>/saved_model.pb) under {base}")
    if len(set(kinds.values())) > 1:
        raise ModelDirError(f"model '{name}': versions need different runtimes {sorted(set(kinds.values()))}")
    code = base / "code"
    code_dir = code if code.is_dir() else shared_code
    return ModelSpec(name, base, next(iter(kinds.values())), tuple(sorted(kinds)), code_dir)


def find_models(model_dir: Path, single_name: str | None = None) -> list[ModelSpec]:
    """All models under model_dir, sorted by name (the first is the default model). A model_dir that is itself one
    model (version folders at its top, as KServe's /mnt/models) is named `single_name`, else after the folder."""
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist (set SAGESTACK_MODEL_DIR)")
    shared = model_dir / "code"
    shared_code = shared if shared.is_dir() else None
    if any(c.is_dir() and c.name.isdigit() and version_kind(c) for c in model_dir.iterdir()):
        return [model_spec(single_name or model_dir.name, model_dir, shared_code)]
    specs = _model_folders(model_dir, shared_code)
    if not specs:
        raise ModelDirError(f"no model found under {model_dir}: expected <name>/<version>/saved_model.pb")
    return specs


def _model_folders(model_dir: Path, shared_code: Path | None) -> list[ModelSpec]:
    specs = []
    for child in sorted(model_dir.iterdir()):
        if child.is_dir() and child.name != "code":
            try:
                specs.append(model_spec(child.name, child, shared_code))
            except ModelDirError:
                continue
    return specs


def model_names(model_dir: Path) -> list[str]:
    """The models a multi-model endpoint can load by name: model_dir's folders that are models (none if it is
    missing)."""
    if not model_dir.is_dir():
        return []
    return [spec.name for spec in _model_folders(model_dir, None) if MODEL_NAME.fullmatch(spec.name)]
