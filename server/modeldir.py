"""Finding models in a model directory (SageMaker's /opt/ml/model layout).

`<dir>/<name>/<version>/saved_model.pb` is a TF SavedModel; `<dir>/<name>/<version>/compiled/
metadata.json` is a compiled artifact whose metadata names its runtime. `<dir>/<name>/code/`
holds that model's handlers; `<dir>/code/` applies to every model that has none of its own.
A directory that directly holds numeric versions is one model named after the directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class ModelDirError(ValueError):
    """No servable version where one was promised."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    base_path: Path
    kind: str
    versions: tuple[int, ...]
    code_dir: Path | None


def version_kind(version_dir: Path) -> str | None:
    """Which runtime serves this version directory, or None if it holds no model."""
    if (version_dir / "saved_model.pb").is_file():
        return "tensorflow"
    meta = version_dir / "compiled" / "metadata.json"
    if meta.is_file():
        return json.loads(meta.read_text())["runtime"]
    return None


def model_spec(name: str, base: Path, shared_code: Path | None = None) -> ModelSpec:
    kinds: dict[int, str] = {}
    if base.is_dir():
        for child in base.iterdir():
            if child.is_dir() and child.name.isdigit() and (kind := version_kind(child)):
                kinds[int(child.name)] = kind
    if not kinds:
        raise ModelDirError(f"model '{name}': no version directory (<version>/saved_model.pb) under {base}")
    if len(set(kinds.values())) > 1:
        raise ModelDirError(f"model '{name}': versions need different runtimes {sorted(set(kinds.values()))}")
    code = base / "code"
    code_dir = code if code.is_dir() else shared_code
    return ModelSpec(name, base, next(iter(kinds.values())), tuple(sorted(kinds)), code_dir)


def find_models(model_dir: Path) -> list[ModelSpec]:
    """All models under model_dir, sorted by name (the first is the default model)."""
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist (set SAGESTACK_MODEL_DIR)")
    shared = model_dir / "code"
    shared_code = shared if shared.is_dir() else None
    if any(c.is_dir() and c.name.isdigit() and version_kind(c) for c in model_dir.iterdir()):
        return [model_spec(model_dir.name, model_dir, shared_code)]
    specs = []
    for child in sorted(model_dir.iterdir()):
        if child.is_dir() and child.name != "code":
            try:
                specs.append(model_spec(child.name, child, shared_code))
            except ModelDirError:
                continue
    if not specs:
        raise ModelDirError(f"no model found under {model_dir}: expected <name>/<version>/saved_model.pb")
    return specs
