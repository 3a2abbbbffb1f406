"""`/projects`: the Lookout-for-Vision-style project API (models.anomaly.projects) over HTTP, on SAGESTACK_PROJECTS_DIR.

```
GET  POST   /projects                                     list; create {"ProjectName"}
GET  DELETE /projects/{project}                           describe (data set counts, versions); delete
PUT         /projects/{project}/roi                       {"Roi": [x, y, w, h] | null}, while the data set is empty
POST        /projects/{project}/images/{label}[?kind=K]   add an image (normal | anomaly; K: its defect kind)
GET         /projects/{project}/images/{label}/{file}     an image as it was saved (cropped to the ROI)
GET  POST   /projects/{project}/models                    list; train {"Fast": false} (202, in the background)
GET         /projects/{project}/models/{version}          status, progress, performance
GET         /projects/{project}/models/{version}/gallery.png  the evaluation's test images with heat maps
POST        /projects/{project}/models/{version}/start    serve it as the next version of the anomaly model
POST        /projects/{project}/models/{version}/stop     take it out of service
```
A started version answers DetectAnomalies at /invocations with the custom attributes its description gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import falcon

from models.anomaly.projects import Projects
from server.errors import ApiError, bad_request, not_found
from server.front import read_body
from server.gateway import Gateway
from server.handler_kit import json_body

IMAGE_TYPES = ("image/png", "image/jpeg", "application/x-image")
DEFAULT_MODEL = "anomaly"


class Resource:
    def __init__(self, projects: Projects, gateway: Gateway) -> None:
        self.projects = projects
        self.gateway = gateway

    def body(self, req: falcon.Request, empty: Any = None) -> Any:
        raw = read_body(req, self.gateway.settings.max_payload_bytes)
        if not raw.strip() and empty is not None:
            return empty
        body = json_body(raw)
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        return body


def _version(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise not_found(f"model version {raw!r} is not a number")
    return int(raw)


class ProjectList(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        described = []
        for name in self.projects.names():
            try:
                described.append(self.projects.describe(name))
            except (ApiError, FileNotFoundError):  # deleted while we looked
                continue
        resp.media = {"Projects": described}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.status = falcon.HTTP_201
        resp.media = {"ProjectMetadata": self.projects.create(self.body(req).get("ProjectName"))}


class Project(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, project: str) -> None:
        resp.media = self.projects.describe(project)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, project: str) -> None:
        self.projects.delete(project)
        resp.media = {"ProjectName": project, "deleted": True}

    def on_put_roi(self, req: falcon.Request, resp: falcon.Response, project: str) -> None:
        body = self.body(req)
        if "Roi" not in body:
            raise bad_request('the body must be {"Roi": [x, y, width, height]} or {"Roi": null}')
        resp.media = self.projects.set_roi(project, body["Roi"])


class Images(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, project: str, label: str) -> None:
        if (req.content_type or "").split(";")[0].strip() not in IMAGE_TYPES:
            raise ApiError(415, f"an image is {', '.join(IMAGE_TYPES)}, not {req.content_type}")
        data = read_body(req, self.gateway.settings.max_payload_bytes)
        kind = req.get_param("kind")
        resp.status = falcon.HTTP_201
        resp.media = self.projects.add_image(project, label, data, kind, self.gateway.settings.max_image_pixels)

    def on_get_file(self, req: falcon.Request, resp: falcon.Response, project: str, label: str, file: str) -> None:
        resp.data, resp.content_type = self.projects.image(project, label, file).read_bytes(), "image/png"


class Models(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, project: str) -> None:
        resp.media = {"Models": self.projects.describe(project)["Models"]}

    def on_post(self, req: falcon.Request, resp: falcon.Response, project: str) -> None:
        fast = self.body(req, empty={}).get("Fast", False)
        if not isinstance(fast, bool):
            raise bad_request(f"Fast must be true or false, not {fast!r}")
        resp.status = falcon.HTTP_202
        resp.media = {"ModelMetadata": self.projects.train(project, fast)}

    def on_get_one(self, req: falcon.Request, resp: falcon.Response, project: str, version: str) -> None:
        resp.media = {"ModelDescription": self.projects.model(project, _version(version))}

    def on_get_gallery(self, req: falcon.Request, resp: falcon.Response, project: str, version: str) -> None:
        path = self.projects.gallery(project, _version(version))
        resp.data, resp.content_type = path.read_bytes(), "image/png"

    def on_post_start(self, req: falcon.Request, resp: falcon.Response, project: str, version: str) -> None:
        served = self.body(req, empty={}).get("ModelName", DEFAULT_MODEL)
        described = self.projects.start(
            project, _version(version), served, self._base(served), lambda: self.gateway.refresh_versions(served)
        )
        resp.media = {"ModelDescription": described}

    def on_post_stop(self, req: falcon.Request, resp: falcon.Response, project: str, version: str) -> None:
        described = self.projects.stop(project, _version(version), self._served_base, self.gateway.refresh_versions)
        resp.media = {"ModelDescription": described}

    def _served_base(self, model: Any) -> Path | None:
        """The folder of a served model, or None if `model` is not served here."""
        route = self.gateway.table().models.get(model) if isinstance(model, str) else None
        return Path(route.base_path) if route is not None else None

    def _base(self, model: Any) -> Path:
        base = self._served_base(model)
        if base is None:
            served = sorted(self.gateway.table().models)
            raise ApiError(409, f"model {model!r} is not served here, so no version can start on it (served: {served})")
        return base


def add_routes(app: falcon.App, gateway: Gateway) -> None:
    assert gateway.settings.projects_dir is not None
    projects = Projects(gateway.settings.projects_dir)
    listing, project, images, models = (r(projects, gateway) for r in (ProjectList, Project, Images, Models))
    app.add_route("/projects", listing)
    app.add_route("/projects/{project}", project)
    app.add_route("/projects/{project}/roi", project, suffix="roi")
    app.add_route("/projects/{project}/images/{label}", images)
    app.add_route("/projects/{project}/images/{label}/{file}", images, suffix="file")
    app.add_route("/projects/{project}/models", models)
    app.add_route("/projects/{project}/models/{version}", models, suffix="one")
    app.add_route("/projects/{project}/models/{version}/gallery.png", models, suffix="gallery")
    app.add_route("/projects/{project}/models/{version}/start", models, suffix="start")
    app.add_route("/projects/{project}/models/{version}/stop", models, suffix="stop")
