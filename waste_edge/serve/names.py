"""Names a client gives (a collected frame, a model) -> a file inside one folder of the service, or a refusal.

No client-given string is ever joined onto a path and opened as it is: a name is checked as text first (not empty,
at most 1,024 characters, valid UTF-8, no control characters or NUL, no backslash, not absolute, no empty, `.`,
`..` or hidden parts), then walked one part at a time with `lstat`, so a symbolic link anywhere on the way is
refused, not followed, and the last part must be a regular file. Every refusal is a `BadNameError` (the routes
answer 404 or 422), never an exception from the file system (a NUL byte used to answer 500).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from waste_edge.errors import WasteEdgeError

MAX_NAME_CHARS = 1024


class BadNameError(WasteEdgeError):
    """A client-given name that is not a plain file name inside the folder (or no such file)."""


def check_name(name: object, what: str = "name") -> list[str]:
    """The `/`-separated parts of an acceptable relative name; `BadNameError` saying why not."""
    if not isinstance(name, str) or not name:
        raise BadNameError(f"{what} must be a non-empty string")
    shown = repr(name[:80])
    if len(name) > MAX_NAME_CHARS:
        raise BadNameError(f"{what} {shown}... is longer than {MAX_NAME_CHARS} characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadNameError(f"{what} {shown} is not valid UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) or "\\" in name:
        raise BadNameError(f"{what} {shown} contains a control character, NUL or backslash")
    if name.startswith("/"):
        raise BadNameError(f"{what} {shown} is absolute; give a name inside the folder")
    parts = name.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise BadNameError(f"{what} {shown} has an empty, '.', '..' or hidden part")
    return parts


def member_file(folder: Path, name: object, what: str = "name") -> Path:
    """The regular file `folder/name`, reached without following any symbolic link; `BadNameError` otherwise."""
    parts = check_name(name, what)
    path = Path(folder)
    for i, part in enumerate(parts):
        path = path / part
        try:
            st = os.lstat(path)
        except OSError:
            raise BadNameError(f"{what} {name!r} is not in {folder.name}/") from None
        last = i == len(parts) - 1
        if stat.S_ISLNK(st.st_mode):
            raise BadNameError(f"{what} {name!r} is a symbolic link; only files inside {folder.name}/ are served")
        if (last and not stat.S_ISREG(st.st_mode)) or (not last and not stat.S_ISDIR(st.st_mode)):
            raise BadNameError(f"{what} {name!r} is not a file in {folder.name}/")
    return path
