"""server/handlers.py: each model's handler keeps the libraries of its own code/, even under one name."""

from __future__ import annotations

from server import handlers


def _model(root, name: str, version: str):
    code = root / name / "code"
    (code / "lib").mkdir(parents=True)
    (code / "lib" / "shared_kit.py").write_text(f"VERSION = {version!r}\n")
    (code / "inference.py").write_text(
        "import shared_kit\n\ndef handler(data, context):\n    return shared_kit.VERSION, 'text/plain'\n"
    )
    return code


def test_two_models_with_one_library_name_each_get_their_own_copy(tmp_path):
    old = handlers.load("old_model", _model(tmp_path, "old_model", "built by an older sagestack"))
    new = handlers.load("new_model", _model(tmp_path, "new_model", "built by this one"))
    assert old.handler(None, None) == ("built by an older sagestack", "text/plain")
    assert new.handler(None, None) == ("built by this one", "text/plain")
