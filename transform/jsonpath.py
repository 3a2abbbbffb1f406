"""The JSONPath that batch transform's InputFilter and OutputFilter take (SageMaker's subset).

`$` the record; `.name` or `['name']` a member; `[n]` an element (negative from the end); `[a:b]` or
`[a:b:c]` a slice; `[i,j]` a union of indexes or names; `*` or `[*]` every member. A CSV record is a list of
its fields, so `$[1:]` drops the first column. A path that can match several values gives a list; one that
names a single value gives that value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class JsonPathError(ValueError):
    """A path outside the subset, or a record the path does not fit; names the path."""


@dataclass(frozen=True)
class Step:
    kind: str  # "name", "index", "slice", "union", "all"
    value: Any = None


_TOKEN = re.compile(r"\.(\*|[A-Za-z_][\w-]*)|\[(.*?)\]")
_QUOTED = re.compile(r"""^\s*(['"])(.*)\1\s*$""")


def parse(path: str) -> list[Step]:
    if not path.startswith("$"):
        raise JsonPathError(f"JSONPath {path!r} must start with $")
    steps, pos = [], 1
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if not match:
            raise JsonPathError(f"JSONPath {path!r}: cannot read {path[pos:]!r}")
        name, bracket = match.groups()
        steps.append(_bracket(path, bracket) if bracket is not None else _name(name))
        pos = match.end()
    return steps


def _name(name: str) -> Step:
    return Step("all") if name == "*" else Step("name", name)


def _bracket(path: str, inner: str) -> Step:
    inner = inner.strip()
    if inner == "*":
        return Step("all")
    try:
        if "," in inner:  # names in a union cannot hold commas themselves
            return Step("union", [_member(p) for p in inner.split(",")])
        quoted = _QUOTED.match(inner)
        if quoted:
            return Step("name", quoted.group(2))
        if ":" in inner:
            parts = [int(p) if p.strip() else None for p in inner.split(":")]
            if len(parts) > 3:
                raise ValueError
            return Step("slice", slice(*parts))
        return Step("index", int(inner))
    except ValueError:
        raise JsonPathError(f"JSONPath {path!r}: [{inner}] is not an index, slice, union or quoted name") from None


def _member(text: str) -> int | str:
    quoted = _QUOTED.match(text)
    return quoted.group(2) if quoted else int(text)


def select(path: str, record: Any) -> Any:
    """The part of `record` the path names (a list where it can name several)."""
    steps = parse(path)
    nodes = [record]
    for step in steps:
        nodes = [child for node in nodes for child in _children(path, step, node)]
    definite = all(s.kind in ("name", "index") for s in steps)
    if definite:
        if not nodes:
            raise JsonPathError(f"JSONPath {path!r} matches nothing in the record")
        return nodes[0]
    return nodes


def _children(path: str, step: Step, node: Any) -> list[Any]:
    if step.kind == "all":
        return list(node.values()) if isinstance(node, dict) else list(node) if isinstance(node, list) else []
    if step.kind == "name":
        return [node[step.value]] if isinstance(node, dict) and step.value in node else []
    if step.kind == "union" and isinstance(node, dict):
        return [node[m] for m in step.value if m in node]
    if not isinstance(node, list):
        return []
    if step.kind == "index":
        return [node[step.value]] if -len(node) <= step.value < len(node) else []
    if step.kind == "slice":
        return node[step.value]
    return [node[m] for m in step.value if isinstance(m, int) and -len(node) <= m < len(node)]
