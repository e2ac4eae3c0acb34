"""The base of every error a user can cause; the CLI prints these as one line and exits 1, no traceback."""


class WasteEdgeError(Exception):
    """A failure with a message meant for the user (bad path, bad file, unsupported option, ...)."""
