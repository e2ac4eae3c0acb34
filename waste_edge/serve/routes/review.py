"""The Review view's API (GET /api/v1/review, frames, POST labels) and the model routes (POST /api/v1/adapt,
POST /api/v1/model). Logic lives in `serve/review.py`; adapt and swap run off the event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import FileResponse, JSONResponse

from waste_edge.errors import WasteEdgeError
from waste_edge.serve.auth import require_token
from waste_edge.serve.review import AdaptRunning, ReviewError, adapt_and_swap, frame_path, label_frames, review_queue

router = APIRouter(dependencies=[Depends(require_token)])


def _error(e: WasteEdgeError, status: int = 422) -> JSONResponse:
    return JSONResponse({"detail": str(e)}, status_code=409 if isinstance(e, AdaptRunning) else status)


@router.get("/api/v1/review")
def review(request: Request) -> Any:
    """Collected frames, oldest first: {file, label (or null), guess, confidence, camera, time}, and label counts."""
    try:
        return review_queue(request.app.state.service)
    except ReviewError as e:
        return _error(e, 404)


@router.get("/api/v1/review/frame/{file:path}")
def frame(file: str, request: Request) -> Any:
    try:
        return FileResponse(frame_path(request.app.state.service, file), headers={"Cache-Control": "no-cache"})
    except ReviewError as e:
        return _error(e, 404)


@router.post("/api/v1/review/labels")
def labels(request: Request, body: dict[str, Any] = Body(...)) -> Any:
    """Body {"labels": {file: label or null}}: label B / N (or display names) / skip; null removes the row."""
    updates = body.get("labels")
    if not isinstance(updates, dict):
        return JSONResponse({"detail": 'expected {"labels": {file: label}}'}, status_code=422)
    try:
        return label_frames(request.app.state.service, updates)
    except ReviewError as e:
        return _error(e)


@router.post("/api/v1/adapt")
async def adapt(request: Request, body: dict[str, Any] | None = Body(None)) -> Any:
    """Refit the head on labels.csv, write a new model (body {"out": path} optional) and swap it in."""
    svc = request.app.state.service
    try:
        return await asyncio.get_running_loop().run_in_executor(None, adapt_and_swap, svc, (body or {}).get("out"))
    except WasteEdgeError as e:
        return _error(e)


@router.post("/api/v1/model")
async def swap_model(request: Request, body: dict[str, Any] = Body(...)) -> Any:
    """Body {"path": model file}: load it and make it the served model without dropping frames."""
    path = body.get("path")
    if not isinstance(path, str) or not path:
        return JSONResponse({"detail": 'expected {"path": "model.onnx"}'}, status_code=422)
    try:
        new = await asyncio.get_running_loop().run_in_executor(None, request.app.state.service.holder.swap, path)
    except (WasteEdgeError, OSError) as e:
        return JSONResponse({"detail": str(e)}, status_code=422)
    return {"model": new.info().to_dict()}
