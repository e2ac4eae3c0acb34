"""GET /stream/{camera}.mjpg: the annotated frames of one camera as MJPEG (multipart/x-mixed-replace).

A camera encodes JPEGs only while at least one client watches, at most `--stream-fps` per second. Each
part carries Content-Length, so a client (the page reads it with fetch to send the bearer token) can
cut the stream without scanning for boundaries.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse

from waste_edge.serve.auth import require_token

router = APIRouter()
BOUNDARY = "waste-edge-frame"


@router.get("/stream/{camera}.mjpg", dependencies=[Depends(require_token)])
async def mjpeg(camera: str, request: Request) -> StreamingResponse:
    svc = request.app.state.service
    frames = svc.stream(camera)
    if frames is None:
        raise HTTPException(status_code=404, detail=f"no camera {camera!r}; cameras: {', '.join(svc.streams) or 'none'}")
    poll = max(0.01, 0.5 / max(frames.fps, 1.0))

    async def stream() -> AsyncIterator[bytes]:
        frames.watch(+1)
        try:
            seen = -1
            while not svc.stopping.is_set():
                seq, jpeg = frames.get()
                if jpeg is None or seq == seen:
                    await asyncio.sleep(poll)
                    continue
                seen = seq
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n").encode() + jpeg + b"\r\n"
        finally:
            frames.watch(-1)

    return StreamingResponse(stream(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                             headers={"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"})
