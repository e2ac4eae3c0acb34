"""GET /api/v1/cameras/{camera}/latest.jpg: the newest annotated frame of one camera (a still, as Frigate serves it).

What Home Assistant's generic camera (still image URL) or a dashboard shows, and what a script attaches
to an alert. The camera id is matched against the service's cameras only (it never reaches the file
system). A camera encodes JPEGs only on demand (`StreamFrame.wanted`): a request that finds no JPEG newer
than FRESH_S marks the demand and waits up to WAIT_S for the next frame; if none comes (the source ended
or stalls) it gets the newest it has. Answers: 200 image/jpeg (Last-Modified: the frame's time), 404 for
a camera that does not exist, 503 with Retry-After while a camera has not yet produced a frame.
"""

from __future__ import annotations

import asyncio
import re
import time
from email.utils import formatdate

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from waste_edge.serve.auth import require_token
from waste_edge.serve.service import CAMERA_ID

router = APIRouter()
FRESH_S = 1.0
WAIT_S = 2.0
_CAMERA = re.compile(CAMERA_ID)


@router.get("/api/v1/cameras/{camera}/latest.jpg", dependencies=[Depends(require_token)])
async def latest_jpeg(camera: str, request: Request) -> Response:
    svc = request.app.state.service
    stream = svc.stream(camera) if _CAMERA.fullmatch(camera) else None
    if stream is None:
        shown = camera if _CAMERA.fullmatch(camera) else "(not a camera id)"
        raise HTTPException(status_code=404, detail=f"no camera {shown}; cameras: {', '.join(svc.streams) or 'none'}")
    stream.demand()
    seq, jpeg, ts = stream.snapshot()
    if jpeg is None or time.time() - ts > FRESH_S:
        deadline = time.monotonic() + WAIT_S
        poll = max(0.01, 0.5 / max(stream.fps, 1.0))
        while time.monotonic() < deadline and not svc.stopping.is_set() and stream.snapshot()[0] == seq:
            await asyncio.sleep(poll)
        seq, jpeg, ts = stream.snapshot()
    if jpeg is None:
        cam = next(c for c in svc.snapshot().cameras if c.id == camera)
        raise HTTPException(status_code=503, headers={"Retry-After": "1"},
                            detail=f"camera {camera} has no frame yet (state: {cam.state}" + (f": {cam.error}" if cam.error else "") + ")")
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store", "Last-Modified": formatdate(ts, usegmt=True)})
