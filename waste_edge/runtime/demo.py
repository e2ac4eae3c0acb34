"""The first-run experience: a camera if one opens, otherwise a generated demo video, never a dead end.

The demo video is synthesised here from shapes and noise (no third-party images, so nothing with an
unknown licence ships); it exists to show the loop, the overlay, the JSONL events and the summary working
end to end on a machine with no camera and no display, not to show accuracy.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from waste_edge._options import common, float_in, option
from waste_edge._outputs import output_folder
from waste_edge.runtime.camera import CameraConfig, CameraSummary, run_camera
from waste_edge.runtime.classifier import Classifier
from waste_edge.runtime.decision import DecisionOptions
from waste_edge.runtime.sinks import OutputOptions
from waste_edge.runtime.sources import open_source


@dataclass(frozen=True)
class DemoOptions:
    """Run the camera loop with the embedded default model on camera --device when it opens; otherwise say so in
    one line and run the same loop on a short generated 640x480 video (synthetic frames, no third-party images).
    Headless when there is no display. Writes an annotated video and a JSONL event log to --out and prints the
    loop's summary.

    `demo`'s own settings (besides --device, --model / --backend, --max-frames and --no-show, shared with
    `camera`)."""

    out: Path = common("--out", Path("demo-out"), type=output_folder, help="folder for the annotated video and events (default: %(default)s)")
    video_seconds: float = option(4.0, "--video-seconds", type=float_in(0.0, 600.0, open_lo=True), metavar="S",
                                  help="length of the generated demo video (default: %(default)s)")


def camera_opens(index: int = 0) -> bool:
    """True when camera `index` opens and delivers a frame; cheap and quiet when there is no camera."""
    if sys.platform.startswith("linux") and not os.path.exists(f"/dev/video{index}"):
        return False  # V4L2 would only log a warning after a slow probe
    cap = cv2.VideoCapture(index)
    try:
        return bool(cap.isOpened() and cap.read()[0])
    finally:
        cap.release()


def write_demo_video(path: str | Path, seconds: float = 4.0, fps: int = 30, size: tuple[int, int] = (640, 480), seed: int = 0) -> Path:
    """A short 640x480 clip: a warm, textured 'organic' blob and a cool, glossy 'bottle' taking turns
    drifting across a bench-grey background, with sensor noise. Deterministic for a given seed."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {out} (no mp4v encoder?)")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    background = (np.stack([110 + 20 * yy / h, 112 + 20 * yy / h, 115 + 15 * xx / w], axis=-1)).astype(np.float32)
    texture = rng.normal(0, 25, (h, w, 1)).astype(np.float32)
    n = int(seconds * fps)
    try:
        for i in range(n):
            frame = background.copy()
            phase = (i / n) * 2
            organic = phase < 1
            t = phase % 1
            cx, cy = int(w * (0.2 + 0.6 * t)), int(h * (0.5 + 0.15 * np.sin(6.28 * t)))
            mask = np.zeros((h, w), np.uint8)
            if organic:
                cv2.ellipse(mask, (cx, cy), (120, 90), 30 * t, 0, 360, 255, -1)
                colour = np.array([40, 110, 160], np.float32)  # BGR brown-orange
                fill = colour + texture * 1.5
            else:
                cv2.rectangle(mask, (cx - 50, cy - 140), (cx + 50, cy + 140), 255, -1)
                cv2.rectangle(mask, (cx - 20, cy - 180), (cx + 20, cy - 140), 255, -1)
                colour = np.array([200, 150, 60], np.float32)  # BGR blue plastic
                fill = colour + 60 * np.clip((xx[..., None] - cx + 50) / 100, 0, 1) ** 4
            m = mask[..., None].astype(bool)
            frame = np.where(m, fill, frame)
            frame += rng.normal(0, 4, frame.shape).astype(np.float32)
            writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    finally:
        writer.release()
    return out


@dataclass
class DemoResult:
    summary: CameraSummary
    video: Path  # the annotated frames
    events: Path  # one JSON event per frame


def run_demo(
    out: str | Path,
    *,
    device: int = 0,
    model: str | Path | None = None,
    backend: str = "auto",
    threads: int | None = None,
    seconds: float = 4.0,
    max_frames: int | None = None,
    show: bool = True,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """The main job with no setup: camera `device` if it opens, else the same loop on a generated demo video.

    `say` gets the lines a user should read as they happen (which source, which model)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if camera_opens(device):
        source: str = str(device)
        say(f"camera {device} opened: classifying live frames (q, Esc or Ctrl-C to stop)")
    else:
        source = str(write_demo_video(folder / "demo-input.mp4", seconds=seconds))
        say(f"no camera at index {device}: running the same loop on a generated demo video ({source})")
    outputs = OutputOptions(show=show, save=folder / "demo-annotated.mp4", jsonl=folder / "demo-events.jsonl")
    config = CameraConfig(output=outputs, decision=DecisionOptions(smooth=5), max_frames=max_frames)
    with Classifier(model, backend, threads=threads) as clf:
        say(f"model: {clf.describe()}")
        with open_source(source) as src:
            summary = run_camera(clf, src, config)
    return DemoResult(summary, Path(outputs.save), Path(outputs.jsonl))  # type: ignore[arg-type]
