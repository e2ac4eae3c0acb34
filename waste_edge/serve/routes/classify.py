"""POST /api/v1/classify (see `serve/classify.py` for the accepted bodies and the 413 / 415 / 422 rules)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from waste_edge.serve.auth import require_token
from waste_edge.serve.classify import ClassifyError, classify_bytes, read_image_body

router = APIRouter()


@router.post(
    "/api/v1/classify",
    dependencies=[Depends(require_token)],
    responses={413: {"description": "body or image too large"}, 415: {"description": "not a JPEG or PNG"},
               422: {"description": "empty, malformed or undecodable"}, 503: {"description": "too many requests waiting"}},
)
async def classify(request: Request) -> Any:
    """Classify one JPEG or PNG: raw body, or multipart/form-data field `file`.
    Answer: {label, display_name, confidence, probabilities, model: {name, sha256}, width, height, infer_ms}."""
    svc = request.app.state.service
    metrics = svc.metrics
    t0 = time.perf_counter()
    try:
        with svc.classify_gate.slot():
            data = await read_image_body(request, svc.config.max_body_bytes)
            answer = await asyncio.get_running_loop().run_in_executor(svc.classify_pool, classify_bytes, svc.holder, data, svc.config.max_pixels)
    except ClassifyError as e:
        metrics.requests.labels(str(e.status)).inc()
        headers = {"Retry-After": "1"} if e.status == 503 else None
        return JSONResponse({"detail": e.detail}, status_code=e.status, headers=headers)
    metrics.classify.observe(time.perf_counter() - t0)
    metrics.requests.labels("200").inc()
    return answer
