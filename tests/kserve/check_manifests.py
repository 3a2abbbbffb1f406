"""Checks KServe manifests against the kserve package's own models (run with the kserve venv's python).

Every key must be a field of the model KServe's SDK generates from its CRDs (camelCase, as the CRD has it), every
value of that field's type, and every object must pass its model's own checks (required fields). Prints
one JSON line: {"ok": bool, "errors": [...], "kinds": [...]}.
"""

import json
import sys

import kubernetes.client.models as k8s_models
import yaml
from kserve import models as kserve_models

KINDS = {"ClusterServingRuntime": "V1alpha1ClusterServingRuntime", "InferenceService": "V1beta1InferenceService"}
PRIMITIVES = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
    "object": (object,),
    "datetime": (str,),
    "date": (str,),
    "bytes": (str,),
}


def model_class(name):
    return getattr(kserve_models, name, None) or getattr(k8s_models, name)


def container(type_name):
    """('list', item type) or ('dict', value type) for the SDKs' two spellings of them, else None."""
    for prefix, kind in (("list[", "list"), ("List[", "list"), ("dict(", "dict"), ("Dict[", "dict")):
        if type_name.startswith(prefix):
            inner = type_name[len(prefix) : -1]
            return kind, inner.split(",", 1)[1].strip() if kind == "dict" else inner
    return None


def check(value, type_name, path, errors):
    shape = container(type_name)
    if shape is not None:
        kind, inner = shape
        wanted = list if kind == "list" else dict
        if not isinstance(value, wanted):
            errors.append(f"{path}: a {kind} is wanted, got {type(value).__name__}")
            return
        items = enumerate(value) if kind == "list" else value.items()
        for key, item in items:
            check(item, inner, f"{path}[{key}]" if kind == "list" else f"{path}.{key}", errors)
    elif type_name in PRIMITIVES:
        wanted = PRIMITIVES[type_name]
        if not isinstance(value, wanted) or (type_name == "int" and isinstance(value, bool)):
            errors.append(f"{path}: {type_name} is wanted, got {value!r}")
    else:
        cls = model_class(type_name)
        if not isinstance(value, dict):
            errors.append(f"{path}: a {type_name} mapping is wanted, got {type(value).__name__}")
            return
        fields = {json_key: attr for attr, json_key in cls.attribute_map.items()}
        for key, item in value.items():
            if key not in fields:
                errors.append(f"{path}.{key}: not a field of {type_name} (fields: {', '.join(sorted(fields))})")
            else:
                check(item, cls.openapi_types[fields[key]], f"{path}.{key}", errors)
        try:  # the models' own checks: required fields, enums
            cls(**{fields[k]: v for k, v in value.items() if k in fields})
        except (ValueError, TypeError) as exc:
            errors.append(f"{path}: {type_name}: {exc}")


def main(paths):
    errors, kinds = [], []
    for path in paths:
        for doc in yaml.safe_load_all(open(path)):
            kind = doc.get("kind")
            kinds.append(kind)
            if kind not in KINDS:
                errors.append(f"{path}: kind {kind!r} is not one of {sorted(KINDS)}")
                continue
            check(doc, KINDS[kind], f"{path}:{kind}", errors)
    print(json.dumps({"ok": not errors, "errors": errors, "kinds": kinds}))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
