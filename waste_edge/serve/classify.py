"""POST /api/v1/classify: one uploaded photo -> the model's answer, with limits that answer 4xx, never 500.

Accepted bodies: the raw bytes of a JPEG or PNG (Content-Type image/jpeg, image/png, application/
octet-stream, curl's default application/x-www-form-urlencoded, or none), or multipart/form-data with the image in the field `file`. Answers:
  413  body larger than `max_body_bytes` (checked while reading, so a chunked upload cannot get round it),
       or an image of more than `max_pixels` pixels (checked from the header, before decoding)
  415  a Content-Type that is not an image / octet-stream / multipart, or bytes that are not JPEG or PNG
  422  an empty body, a multipart body without `file`, or a JPEG / PNG that does not decode (truncated, corrupt)
  503  more than `classify_queue` requests already waiting (with Retry-After), or the model failed on this
       photo (NaN probabilities, a runtime error): never a label; /healthz says so until the model answers again
The photo is decoded by `waste_edge.data.decode` (EXIF rotation, RGB) exactly as `waste-edge predict`
decodes a file, and classified alone, so the answer equals `predict`'s on the same file.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Iterator

from starlette.requests import Request

from waste_edge.data.decode import DecodeError, ImageTooLargeError, decode_rgb_bytes
from waste_edge.serve.model_holder import ModelHolder

IMAGE_TYPES = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/pjpeg": "JPEG", "image/png": "PNG"}
# Bodies whose type says nothing: sniffed. (`curl --data-binary @photo.jpg` sends the form-urlencoded type.)
UNTYPED = frozenset({"application/octet-stream", "application/x-www-form-urlencoded"})
MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))


class ClassifyError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ClassifyGate:
    """At most `limit` classify requests in the service at once (reading, waiting for a worker, running); the
    next one is refused at once with 503 instead of queueing without bound."""

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one place for the request; `ClassifyError(503)` when every place is taken."""
        with self._lock:
            if self._pending >= self.limit:
                raise ClassifyError(503, f"{self._pending} requests waiting; try again")
            self._pending += 1
        try:
            yield
        finally:
            with self._lock:
                self._pending -= 1


def sniff(data: bytes) -> str | None:
    for magic, name in MAGIC:
        if data.startswith(magic):
            return name
    return None


async def _read_capped(receive_chunks: Callable[[], Any], limit: int) -> bytes:
    buf = bytearray()
    async for chunk in receive_chunks():
        buf += chunk
        if len(buf) > limit:
            raise ClassifyError(413, f"body larger than the limit of {limit} bytes")
    return bytes(buf)


async def read_image_body(request: Request, max_body_bytes: int) -> bytes:
    """The image bytes of a classify request (raw body or multipart `file`), or ClassifyError."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise ClassifyError(413, f"body of {declared} bytes is larger than the limit of {max_body_bytes} bytes")
    multipart = ctype == "multipart/form-data"
    if ctype and not multipart and ctype not in IMAGE_TYPES and ctype not in UNTYPED:
        raise ClassifyError(415, f"Content-Type {ctype} is not accepted: send a JPEG or PNG (raw body or multipart field 'file')")
    body = await _read_capped(request.stream, max_body_bytes)
    if multipart:
        body = await _multipart_file(request, body)
    if not body:
        raise ClassifyError(422, "empty body: send a JPEG or PNG")
    kind = sniff(body)
    if kind is None:
        raise ClassifyError(415, "the body is not a JPEG or PNG image")
    return body


async def _multipart_file(request: Request, body: bytes) -> bytes:
    sent = False

    async def replay() -> dict[str, Any]:  # the already-read (size-checked) body, once, to Starlette's parser
        nonlocal sent
        if sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
    except Exception as e:  # malformed multipart (no boundary, broken parts): the client's fault
        raise ClassifyError(422, f"malformed multipart body: {str(e) or type(e).__name__}") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ClassifyError(422, "multipart body has no file field named 'file'")
        return await upload.read()
    finally:
        await form.close()


def classify_bytes(holder: ModelHolder, data: bytes, max_pixels: int) -> dict[str, Any]:
    """Decode and classify (runs in the classify thread pool)."""
    try:
        rgb = decode_rgb_bytes(data, max_pixels=max_pixels, formats=("JPEG", "PNG"))
    except ImageTooLargeError as e:
        raise ClassifyError(413, str(e)) from None
    except DecodeError as e:
        raise ClassifyError(422, str(e)) from None
    except Exception as e:  # a decoder bug on a hostile file is still a bad body, not a server fault
        raise ClassifyError(422, f"cannot decode: {type(e).__name__}: {e}") from None
    with holder.use() as model:
        t0 = time.perf_counter()
        try:
            probs = model.classifier.predict_proba(rgb, "RGB")[0]
        except Exception as e:  # the model's failure on this photo (NonFiniteOutputError, ORT): an error, never a label
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            holder.note_failure(model.sha256, msg)
            raise ClassifyError(503, f"the model failed on this image: {msg}") from None
        infer_ms = (time.perf_counter() - t0) * 1e3
    holder.note_success(model.sha256)
    pred = model.classifier.result(probs)
    return {
        "label": pred.label,
        "display_name": pred.display_name,
        "confidence": pred.confidence,
        "probabilities": pred.probabilities,
        "model": {"name": model.path.name, "sha256": model.sha256},
        "width": int(rgb.shape[1]),
        "height": int(rgb.shape[0]),
        "infer_ms": round(infer_ms, 3),
    }


