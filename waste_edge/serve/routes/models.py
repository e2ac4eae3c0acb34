"""GET /api/v1/models (what may be served) and POST /api/v1/model (serve one of them, or an uploaded file).

POST takes either JSON `{"name": FILE}` / `{"sha256": HEX}` naming a model of the list, or multipart/form-data
with the model in the field `file` (stored into the models folder as `upload-<sha256[:12]>.onnx`). Either way
the model is loaded and probed before it serves (`model_holder.load_model`); a model that fails (not ONNX, NaN
answers, other classes) is refused with 422 and the current model keeps serving. No request names a path. One
upload at a time (409 for a second), and only the newest `--keep-models` uploads and adapted models stay.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from waste_edge.errors import WasteEdgeError
from waste_edge.serve.auth import require_token
from waste_edge.serve.bodies import ModelChoice, describe_errors
from waste_edge.serve.catalogue import CatalogueError, ModelCatalogue
from waste_edge.serve.routes.review import error_response

router = APIRouter(dependencies=[Depends(require_token)])


@router.get("/api/v1/models")
async def list_models(request: Request) -> Any:
    """The models folder's models and the startup model: {folder, models: [{name, sha256, size, origin, serving}]}."""
    catalogue: ModelCatalogue = request.app.state.catalogue
    serving = request.app.state.service.holder.current.sha256
    entries = await asyncio.get_running_loop().run_in_executor(None, catalogue.entries)  # hashes new files: off the loop
    return {"folder": str(catalogue.folder) if catalogue.folder else None, "models": [e.to_dict(serving) for e in entries]}


@router.post(
    "/api/v1/model",
    responses={404: {"description": "no such model in the list"}, 409: {"description": "no models folder"},
               413: {"description": "upload too large"}, 422: {"description": "malformed body, or the model fails its checks"}},
    openapi_extra={"requestBody": {"content": {
        "application/json": {"schema": ModelChoice.model_json_schema()},
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
    }}},
)
async def swap_model(request: Request) -> Any:
    """Serve another model without dropping frames: one of GET /api/v1/models by name or sha256, or an upload."""
    svc = request.app.state.service
    catalogue: ModelCatalogue = request.app.state.catalogue
    loop = asyncio.get_running_loop()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    created = False
    try:
        if ctype == "multipart/form-data":
            lock: asyncio.Lock = request.app.state.upload_lock
            if lock.locked():
                raise CatalogueError("another model upload is in progress; try again when it is done", status=409)
            async with lock:
                path, created = await _store_upload(request, catalogue)
        else:
            try:
                choice = ModelChoice.model_validate_json(await request.body() or b"null")
            except ValidationError as e:
                return JSONResponse({"detail": describe_errors(e.errors()) + '; expected {"name": FILE} or {"sha256": HEX} of '
                                               'GET /api/v1/models, or a multipart upload in field "file"'}, status_code=422)
            entry = await loop.run_in_executor(None, lambda: catalogue.find(name=choice.name, sha256=choice.sha256))
            path, created = entry.path, False
        try:
            new = await loop.run_in_executor(None, svc.holder.swap, path)
        except BaseException:
            if created:  # a refused upload does not stay in the folder
                path.unlink(missing_ok=True)
            raise
        if created:
            await loop.run_in_executor(None, catalogue.prune, new.sha256)
    except CatalogueError as e:
        return error_response(e)
    except WasteEdgeError as e:  # does not load, fails the probe, other classes: the current model keeps serving
        return JSONResponse({"detail": f"{'the uploaded model: ' if created else ''}{e}"}, status_code=422)
    return {"model": new.info().to_dict()}


async def _store_upload(request: Request, catalogue: ModelCatalogue) -> tuple[Any, bool]:
    limits = request.app.state.limits
    catalogue.require_folder()
    try:
        form = await request.form(max_files=1, max_fields=1, max_part_size=64 * 1024)
    except ClientDisconnect:
        raise
    except Exception as e:  # malformed multipart: the client's fault (the body size was capped by RequestGuard)
        raise CatalogueError(f"malformed multipart body: {str(e) or type(e).__name__}", status=422) from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise CatalogueError('multipart body has no file field named "file"', status=422)
        path, _sha, created = await asyncio.get_running_loop().run_in_executor(None, catalogue.store_upload, upload.file, limits.max_model_bytes)
        return path, created
    finally:
        await form.close()
