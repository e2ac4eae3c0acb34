"""The Review view's API (GET /api/v1/review, frames, POST labels) and POST /api/v1/adapt. Logic lives in
`serve/review.py`; adapt runs off the event loop. Bodies are pydantic models (`serve/bodies.py`); frame names
reach the collection folder only through `serve/names.py` (404 for anything that is not one of its images)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import FileResponse, JSONResponse

from waste_edge.errors import WasteEdgeError
from waste_edge.serve.auth import require_token
from waste_edge.serve.bodies import AdaptBody, LabelsBody
from waste_edge.serve.catalogue import CatalogueError
from waste_edge.serve.names import BadNameError
from waste_edge.serve.review import AdaptRunning, ReviewError, adapt_and_swap, frame_path, label_frames, review_queue

router = APIRouter(dependencies=[Depends(require_token)])


def error_response(e: WasteEdgeError, status: int = 422) -> JSONResponse:
    """A refused request: the catalogue's own status, 409 while an adaptation runs (a type, not a message), else `status`."""
    if isinstance(e, CatalogueError):
        status = e.status
    elif isinstance(e, AdaptRunning):
        status = 409
    return JSONResponse({"detail": str(e)}, status_code=status)


@router.get("/api/v1/review")
def review(request: Request) -> Any:
    """Collected frames, oldest first: {file, label (or null), guess, confidence, camera, time}, and label counts."""
    try:
        return review_queue(request.app.state.service)
    except ReviewError as e:
        return error_response(e, 404)


@router.get("/api/v1/review/frame/{file:path}", responses={404: {"description": "not an image of the collection folder"}})
def frame(file: str, request: Request) -> Any:
    try:
        return FileResponse(frame_path(request.app.state.service, file), headers={"Cache-Control": "no-cache"})
    except (ReviewError, BadNameError) as e:
        return error_response(e, 404)


@router.post("/api/v1/review/labels", responses={422: {"description": "not a frame of the folder, or an unknown label"}})
def labels(request: Request, body: LabelsBody) -> Any:
    """Label B / N (or display names) / skip; null removes the row. Every file must be an image of the collection."""
    try:
        return label_frames(request.app.state.service, body.labels)
    except (ReviewError, BadNameError) as e:
        return error_response(e)


@router.post("/api/v1/adapt", responses={409: {"description": "an adaptation is running, or no models folder"}})
async def adapt(request: Request, body: AdaptBody | None = Body(None)) -> Any:
    """Refit the head on labels.csv, write a new model into the models folder (named by the service) and swap it in."""
    app = request.app
    try:
        return await asyncio.get_running_loop().run_in_executor(None, adapt_and_swap, app.state.service, app.state.catalogue)
    except WasteEdgeError as e:
        return error_response(e)
