"""Fetch the study's Kaggle dataset with kagglehub, or say at once what is missing and how to place it by hand.

kagglehub (the `[data]` extra) is imported lazily. The checks run before any download so that a machine
without credentials or network fails in seconds with a useful message instead of a long network timeout.
"""

from __future__ import annotations

from pathlib import Path

from waste_edge._io import tcp_unreachable
from waste_edge.errors import WasteEdgeError

DATASET = "rayhanzamzamy/non-and-biodegradable-waste-dataset"
KAGGLE_HOST = "www.kaggle.com"

MANUAL_LAYOUT = (
    "To place the data by hand, download the archive from https://www.kaggle.com/datasets/" + DATASET + " "
    "on a machine with access, unpack it and keep its folders: <DIR>/TRAIN.1/B, <DIR>/TRAIN.1/N, ... "
    "<DIR>/TRAIN.n/{B,N}, <DIR>/TEST/{B,N} (B = biodegradable, N = non-biodegradable); then run "
    "`waste-edge data check <DIR>`."
)


class DownloadError(WasteEdgeError):
    """The dataset cannot be fetched here; the message says what is missing and how to lay the data out."""


def credentials_source() -> str | None:
    """Where Kaggle credentials come from (for the message), or None when there are none: kagglehub's own
    lookup (KAGGLE_API_TOKEN, ~/.kaggle/access_token, KAGGLE_USERNAME/KAGGLE_KEY, $KAGGLE_CONFIG_DIR or
    ~/.kaggle/kaggle.json). Called after kagglehub is known to be installed."""
    from kagglehub import config

    try:
        creds = config.get_kaggle_credentials()
    except ValueError as e:  # a kaggle.json without username/key
        raise DownloadError(f"Kaggle credentials are unusable: {e}. {MANUAL_LAYOUT}") from None
    if creds is None:
        return None
    return "API token" if creds.api_key else f"user {creds.username}"


def download_dataset(out: str | Path | None = None, *, handle: str = DATASET, connect_timeout: float = 3.0) -> Path:
    """Download `handle` (into `out`, or kagglehub's cache) and return the folder holding TRAIN.*/TEST."""
    try:
        import kagglehub
    except ImportError:
        raise DownloadError(f"kagglehub is not installed: pip install 'waste-edge[data]'. {MANUAL_LAYOUT}") from None
    source = credentials_source()
    if source is None:
        raise DownloadError(
            "no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), or save "
            "~/.kaggle/kaggle.json from https://www.kaggle.com/settings (API > Create New Token). " + MANUAL_LAYOUT
        )
    reason = tcp_unreachable(KAGGLE_HOST, 443, connect_timeout)
    if reason is not None:
        raise DownloadError(f"cannot reach {KAGGLE_HOST}:443 ({reason}): no network here. {MANUAL_LAYOUT}")
    try:
        path = kagglehub.dataset_download(handle, output_dir=str(out) if out is not None else None)
    except Exception as e:  # noqa: BLE001 - kagglehub raises many types; the user needs one line
        raise DownloadError(f"kagglehub could not download {handle}: {type(e).__name__}: {e}. {MANUAL_LAYOUT}") from None
    return dataset_root(Path(path))


def dataset_root(folder: Path, depth: int = 3) -> Path:
    """The folder that holds the split folders: archives often wrap them in one or two more directories."""
    level = [folder]
    for _ in range(depth + 1):
        for candidate in level:
            if any(d.is_dir() and d.name.upper().startswith(("TRAIN", "TEST")) for d in candidate.iterdir()):
                return candidate
        level = [d for c in level for d in sorted(c.iterdir()) if d.is_dir()]
    return folder
