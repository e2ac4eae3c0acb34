"""`--token`: every API and stream route needs `Authorization: Bearer TOKEN`.

Open without a token: the page itself and its static files (they hold no data; the page asks for the
token once and keeps it in the browser's localStorage) and `/healthz` (what systemd, Docker and load
balancers probe; it says only "ok" or why not). The comparison is constant-time.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def require_token(request: Request) -> None:
    """FastAPI dependency; a no-op when the service runs without --token."""
    expected: str | None = request.app.state.token
    if not expected:
        return
    got = bearer_token(request)
    if got is None or not hmac.compare_digest(got.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": 'Bearer realm="waste-edge"'})
