"""The FastAPI application over a running `Service`: one router per concern (see `routes/`), behind `RequestGuard`.

New views and endpoints are added as another router in `ROUTERS` and another view module of the page
(`static/js/views.js`); a route whose body is not a small JSON document adds its `BodyRule` in `body_rules`.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from waste_edge import __version__
from waste_edge.serve.bodies import describe_errors
from waste_edge.serve.catalogue import ModelCatalogue, models_folder
from waste_edge.serve.limits import HttpLimits
from waste_edge.serve.logs import EventCounter
from waste_edge.serve.request_guard import JSON, BodyRule, RequestGuard, SitePolicy
from waste_edge.serve.routes import classify, events, models, page, review, snapshots, status, streams
from waste_edge.serve.routes.events import StatsCache
from waste_edge.serve.service import Service

ROUTERS = [page.router, status.router, classify.router, events.router, streams.router, snapshots.router, review.router, models.router]
MODEL_BODY_TYPES = JSON | {"multipart/form-data"}

log = logging.getLogger("waste_edge.serve.http")


def body_rules(service: Service, limits: HttpLimits) -> dict[str, BodyRule]:
    """The routes whose bodies are not a JSON document of at most `max_json_bytes` (the rule of every other path)."""
    return {
        "/api/v1/classify": BodyRule(service.config.max_body_bytes, None),  # photo; serve/classify.py checks its type
        "/api/v1/model": BodyRule(limits.max_model_bytes, MODEL_BODY_TYPES),  # JSON {name | sha256} or a multipart upload
    }


def create_app(service: Service, token: str | None = None, *, policy: SitePolicy | None = None, limits: HttpLimits | None = None,
               events: EventCounter | None = None) -> FastAPI:
    limits = limits or HttpLimits()
    app = FastAPI(title="waste-edge", version=__version__, docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.service = service
    app.state.token = token
    app.state.limits = limits
    app.state.http_events = events = events or EventCounter(log)
    app.state.connections = None  # the server's ConnectionGuard, set by server.run_server
    app.state.stats_cache = StatsCache()
    collect = service.config.collect.folder if service.config.collect is not None else None
    app.state.catalogue = ModelCatalogue(models_folder(service.config.models_dir, collect), service.holder.current.path, keep=limits.keep_models)
    app.state.upload_lock = asyncio.Lock()  # one model upload at a time (each may hold up to --max-model-mb on disk)
    for router in ROUTERS:
        app.include_router(router)
    page.mount_static(app)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_errors(exc.errors())}, status_code=422)

    app.add_middleware(RequestGuard, policy=policy or SitePolicy.for_bind("127.0.0.1"), rules=body_rules(service, limits),
                       default_rule=BodyRule(limits.max_json_bytes, JSON), events=events)
    return app
