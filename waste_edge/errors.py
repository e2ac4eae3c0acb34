"""The base of every error a user can cause; the CLI prints these as one line and exits 1, no traceback."""


class WasteEdgeError(Exception):
    """A failure with a message meant for the user (bad path, bad file, unsupported option, ...)."""


class TooLargeError(WasteEdgeError):
    """An input over a size limit (pixels from an image header, bytes of a file or body): skipped, or HTTP 413."""


class InputFileError(WasteEdgeError, OSError):
    """An input path that is not a regular file (a FIFO, a device such as /dev/urandom, a socket) or is larger
    than its reader's limit: reading it could block or never end, so it is refused before it is opened.
    An OSError as well, so a reader's `except OSError` reports it as an unreadable file."""
