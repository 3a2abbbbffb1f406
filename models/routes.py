"""The model families' HTTP routes, which the gateway adds by module name (server.app.ROUTE_MODULES).

Each family's API is imported only when its setting turns it on, so a gateway worker that serves none pays nothing.
"""

from __future__ import annotations

from typing import Any


def add_routes(app: Any, gateway: Any) -> None:
    if gateway.settings.projects_dir is not None:
        from models.anomaly import projects_api

        projects_api.add_routes(app, gateway)
