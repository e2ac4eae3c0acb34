"""The bearer token: where it comes from (`resolve_token`) and the check every API and stream route makes.

Every API and stream route needs `Authorization: Bearer TOKEN` when a token is set. Open without it: the page
itself and its static files (they hold no data; the page asks for the token once and keeps it in the browser's
localStorage) and `/healthz` (what systemd, Docker and load balancers probe; it says only "ok" or why not).
The comparison is constant-time (`hmac.compare_digest`).

A token on the command line (`--token`) is visible to every local user in `/proc/PID/cmdline` and `ps`, so it
is accepted with a warning; `--token-file PATH` (a regular file of at most 4 KiB, one line) or the environment
variable `WASTE_EDGE_TOKEN` keep it private.
"""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path
from typing import Mapping

from fastapi import HTTPException, Request

from waste_edge.errors import WasteEdgeError

TOKEN_ENV = "WASTE_EDGE_TOKEN"
MAX_TOKEN_FILE = 4096
MIN_TOKEN_CHARS = 16


def _check(token: str, where: str) -> str:
    token = token.strip()
    if not token:
        raise WasteEdgeError(f"{where}: the token is empty")
    if any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise WasteEdgeError(f"{where}: the token must be one line of printable ASCII without spaces (it travels in an HTTP header)")
    return token


def _read_token_file(path: Path) -> tuple[str, list[str]]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the start
    except OSError as e:
        raise WasteEdgeError(f"--token-file {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise WasteEdgeError(f"--token-file {path}: not a regular file")
        if st.st_size > MAX_TOKEN_FILE:
            raise WasteEdgeError(f"--token-file {path}: {st.st_size} bytes; a token file holds one line (at most {MAX_TOKEN_FILE} bytes)")
        data = os.read(fd, MAX_TOKEN_FILE + 1)
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise WasteEdgeError(f"--token-file {path}: not UTF-8 text") from None
    warnings = []
    if st.st_mode & 0o077:
        warnings.append(f"--token-file {path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    return _check(text, f"--token-file {path}"), warnings


def resolve_token(argv_token: str | None, token_file: str | Path | None, environ: Mapping[str, str] = os.environ) -> tuple[str | None, list[str]]:
    """(token or None, warnings to print): `--token-file`, else `--token` (warned), else $WASTE_EDGE_TOKEN."""
    if argv_token is not None and token_file is not None:
        raise WasteEdgeError("give the token once: --token-file or --token, not both")
    warnings: list[str] = []
    if token_file is not None:
        token, warnings = _read_token_file(Path(token_file))
    elif argv_token is not None:
        token = _check(argv_token, "--token")
        warnings.append(f"--token on the command line is visible to every local user (ps, /proc/PID/cmdline); "
                        f"use --token-file PATH or the environment variable {TOKEN_ENV}")
    elif environ.get(TOKEN_ENV, "").strip():
        token = _check(environ[TOKEN_ENV], TOKEN_ENV)
    else:
        return None, []
    if len(token) < MIN_TOKEN_CHARS:
        warnings.append(f"the token has {len(token)} characters; use at least {MIN_TOKEN_CHARS} random ones (e.g. `openssl rand -hex 16`)")
    return token, warnings


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def require_token(request: Request) -> None:
    """FastAPI dependency; a no-op when the service runs without a token."""
    expected: str | None = request.app.state.token
    if not expected:
        return
    got = bearer_token(request)
    if got is None or not hmac.compare_digest(got.encode("utf-8", "surrogateescape"), expected.encode()):
        raise HTTPException(status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": 'Bearer realm="waste-edge"'})
