"""credit_risk's sample requests: real applications from the German credit data, as JSON and as CSV."""

from __future__ import annotations

import json

from models.credit_risk.data import load


def applications(n: int) -> list[dict]:
    """The first n applications in the readable schema, numbers as numbers (what a JSON client sends)."""
    frame = load().drop(columns=["risk"]).head(n)
    return json.loads(frame.to_json(orient="records"))


def samples() -> dict[str, bytes]:
    csv = load().drop(columns=["risk"]).head(5).to_csv(index=False).encode()
    return {"application.json": json.dumps({"instances": applications(1)}, indent=1).encode(), "applications.csv": csv}
