"""The FastAPI application over a running `Service`: one router per concern (see `routes/`).

New views and endpoints (frame review, model swap) are added as another router in `ROUTERS` and another
view module of the page (`static/js/views.js`); nothing here needs to change for them.
"""

from __future__ import annotations

from fastapi import FastAPI

from waste_edge import __version__
from waste_edge.serve.routes import classify, events, page, review, snapshots, status, streams
from waste_edge.serve.service import Service

ROUTERS = [page.router, status.router, classify.router, events.router, streams.router, snapshots.router, review.router]


def create_app(service: Service, token: str | None = None) -> FastAPI:
    app = FastAPI(title="waste-edge", version=__version__, docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.service = service
    app.state.token = token
    for router in ROUTERS:
        app.include_router(router)
    page.mount_static(app)
    return app
