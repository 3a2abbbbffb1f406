"""`GET /samples/{model}` and `GET /samples/{model}/{file}`: a model's sample requests (its `code/samples/`, which
the family's build writes), so the console, or any client, can show what a model takes before sending its own."""

from __future__ import annotations

from pathlib import Path

import falcon

from server.errors import not_found
from server.gateway import Gateway
from server.modeldir import sample_files

CONTENT_TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".json": "application/json",
    ".jsonl": "application/jsonlines", ".csv": "text/csv", ".mid": "audio/midi", ".midi": "audio/midi",
    ".npy": "application/x-npy", ".txt": "text/plain",
}  # fmt: skip


def content_type(file: Path) -> str:
    return CONTENT_TYPES.get(file.suffix.lower(), "application/octet-stream")


class Samples:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _files(self, model: str) -> list[Path]:
        route = self.gateway.table().models.get(model)
        if route is None:
            raise not_found(f"model '{model}' is not served here (served: {sorted(self.gateway.table().models)})")
        return sample_files(Path(route.code_dir) if route.code_dir else None)

    def on_get(self, req: falcon.Request, resp: falcon.Response, model: str) -> None:
        files = self._files(model)
        resp.media = {"model": model, "samples": [
            {"name": f.name, "content_type": content_type(f), "bytes": f.stat().st_size} for f in files
        ]}  # fmt: skip

    def on_get_file(self, req: falcon.Request, resp: falcon.Response, model: str, file: str) -> None:
        found = {f.name: f for f in self._files(model)}
        if file not in found:
            raise not_found(f"model '{model}' has no sample {file!r} (samples: {sorted(found)})")
        resp.data, resp.content_type = found[file].read_bytes(), content_type(found[file])


def add_routes(app: falcon.App, gateway: Gateway) -> None:
    samples = Samples(gateway)
    app.add_route("/samples/{model}", samples)
    app.add_route("/samples/{model}/{file}", samples, suffix="file")
