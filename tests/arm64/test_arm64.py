"""`make test-arm64`: the product on linux/arm64 (emulated Debian bookworm, scripts/arm64.sh) gives the host's answers.

ONNX Runtime runs different kernels on ARM64 (NEON; UDOT/SDOT dot products for INT8 on ARMv8.2 CPUs), with different
float rounding. These checks run the installed wheel in the arm64 root and compare it with the host on the shipped
default model (whatever model is shipped: never against stored numbers):

* `predict` on waste-sample TEST photos (40, a random stratified sample each run unless WASTE_EDGE_ARM64_SEED is
  set; WASTE_EDGE_ARM64_PHOTOS changes the count, WASTE_EDGE_ARM64_DATA=FOLDER draws them from another folder) on each emulated CPU of WASTE_EDGE_ARM64_CPUS: cortex-a72 is the
  Raspberry Pi 4 (ARMv8.0: NEON, no dot product; also what a Jetson Nano's A57 offers), cortex-a76 the Raspberry Pi 5
  (ARMv8.2 with UDOT/SDOT, like a Jetson Orin's A78AE). Identical labels, max |dp| <= 1e-3.
* nothing on stderr that the host does not print (ONNX Runtime's CPU detection warns when /proc/cpuinfo and /sys
  do not describe an ARM CPU; scripts/arm64.sh gives the root a board's), `info` (the host's model card),
  `camera` on a generated video (headless, an event per frame, the host's labels and probabilities), `serve`
  answering /healthz and one classify like the host's predict.

They run only under `make test-arm64` (WASTE_EDGE_ARM64=1, after `scripts/arm64.sh setup --extra serve`): each
arm64 process is emulated, about 100x slower than the board, so no figure here is a speed.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import REPO
from waste_edge._io import list_images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(os.environ.get("WASTE_EDGE_ARM64") != "1", reason="arm64 emulation checks: run `make test-arm64` (root, binfmt, network for setup)"),
]

SCRIPT = REPO / "scripts" / "arm64.sh"
HOST_CLI = [sys.executable, "-m", "waste_edge.cli"]
CPUS = [c for c in os.environ.get("WASTE_EDGE_ARM64_CPUS", "cortex-a72,cortex-a76").split(",") if c]
N_PHOTOS = int(os.environ.get("WASTE_EDGE_ARM64_PHOTOS", "40"))
DATA = os.environ.get("WASTE_EDGE_ARM64_DATA")
MAX_DP = 1e-3


def arm64(*args: str, cpu: str | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = dict(os.environ, WASTE_EDGE_ARM64_CPU=cpu or CPUS[0])
    return subprocess.run([str(SCRIPT), "exec", *args], capture_output=True, text=True, timeout=timeout, env=env)


def host(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*HOST_CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def ok(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{what}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


def read_predictions(path: Path) -> dict[str, dict[str, str]]:
    """Rows by the photo's path (the same /tmp path on both sides; names may repeat across subfolders)."""
    with open(path, newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def max_dp(a: dict[str, float], b: dict[str, float]) -> float:
    assert a.keys() == b.keys()
    return max(abs(a[k] - b[k]) for k in a)


@pytest.fixture(scope="module")
def work():
    """A folder under /tmp: the arm64 root sees the host's /tmp (and this repository) at the same paths."""
    d = Path(tempfile.mkdtemp(prefix="waste-edge-arm64-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def photo_source(request) -> Path:
    """WASTE_EDGE_ARM64_DATA (any folder of photos: TRAIN, a bin's own camera shots), else waste-sample TEST."""
    if DATA:
        folder = Path(DATA).expanduser()
        if not folder.is_dir():
            pytest.fail(f"WASTE_EDGE_ARM64_DATA={DATA}: not a folder")
        return folder
    return request.getfixturevalue("waste_sample") / "TEST"


@pytest.fixture(scope="module")
def photos(photo_source, work):
    """N_PHOTOS photos drawn at random from the source, evenly over its subfolders (the classes of waste-sample),
    copied to /tmp with their relative paths (the source may not be visible in the root)."""
    seed = int(os.environ.get("WASTE_EDGE_ARM64_SEED") or random.SystemRandom().randrange(10**6))
    rng = random.Random(seed)
    groups: dict[str, list[Path]] = {}
    for p in list_images(photo_source):
        rel = p.relative_to(photo_source)
        groups.setdefault(rel.parts[0] if len(rel.parts) > 1 else "", []).append(p)
    assert groups, f"{photo_source}: no images"
    folder = work / "photos"
    for i, (_, files) in enumerate(sorted(groups.items())):
        k = N_PHOTOS // len(groups) + (1 if i < N_PHOTOS % len(groups) else 0)
        for p in rng.sample(files, min(k, len(files))):
            dest = folder / p.relative_to(photo_source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
    n = len(list_images(folder))
    print(f"\narm64: {n} photos of {photo_source}, seed {seed} (WASTE_EDGE_ARM64_SEED={seed} repeats this sample)")
    return folder


@pytest.fixture(scope="module")
def host_run(photos, work):
    return ok(host("predict", str(photos), "--out", str(work / "host.csv"), "--quiet"), "host predict")


@pytest.fixture(scope="module")
def host_predictions(host_run, work):
    return read_predictions(work / "host.csv")


@pytest.mark.parametrize("cpu", CPUS)
def test_predict_matches_the_host(cpu, photos, work, host_run, host_predictions):
    out = work / f"arm64-{cpu}.csv"
    t0 = time.monotonic()
    run = ok(arm64("predict", str(photos), "--out", str(out), "--quiet", cpu=cpu), f"arm64 predict ({cpu})")
    # stderr is the model line, as on the host: nothing from ONNX Runtime's CPU detection or anything else
    assert run.stderr == host_run.stderr, f"a user on the board would see:\n{run.stderr}"
    arm = read_predictions(out)
    assert arm.keys() == host_predictions.keys() and len(arm) >= min(N_PHOTOS, 2)
    assert not [r for r in arm.values() if r["error"]], "arm64 could not classify some photos"
    differ = [name for name in arm if arm[name]["label"] != host_predictions[name]["label"]]
    dp = max(abs(float(arm[n][c]) - float(host_predictions[n][c])) for n in arm for c in arm[n] if c.startswith("p_"))
    print(f"arm64 {cpu}: {len(arm)} photos, labels differ on {len(differ)}, max |dp| {dp:.1e} (predict writes 6 decimals; "
          f"emulated, {time.monotonic() - t0:.0f} s)")
    assert not differ, f"labels differ on {differ}"
    assert dp <= MAX_DP


def test_info_shows_the_hosts_model_card():
    arm = ok(arm64("info", timeout=600), "arm64 info")
    ref = ok(host("info"), "host info")
    sha = re.compile(r"sha256 ([0-9a-f]{64})")
    assert sha.search(arm.stdout) and sha.search(arm.stdout).group(1) == sha.search(ref.stdout).group(1)
    card = lambda out: [line for line in out.splitlines()[1:] if not line.startswith("this cpu   :")]  # noqa: E731
    assert card(arm.stdout) == card(ref.stdout)  # the card; only the model's path and the CPU's own line differ
    assert arm.stderr == "", f"a user on a board would see this on stderr:\n{arm.stderr}"


def lossless_copy(video: Path, out: Path) -> Path:
    """The frames of `video` re-coded losslessly (FFV1). MPEG-4 Part 2 (mp4v, what OpenCV writes) does not specify
    its inverse DCT bit-exactly: FFmpeg's x86-64 and ARM64 builds decode the same file up to 3 grey levels apart on
    most pixels, which moves the probabilities by ~1e-2. FFV1 decodes to the same pixels everywhere, so the camera
    comparison measures the model, not the video decoder."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"FFV1"), cap.get(cv2.CAP_PROP_FPS), (640, 480))
    assert writer.isOpened(), "this OpenCV cannot write FFV1"
    while True:
        got, frame = cap.read()
        if not got:
            break
        writer.write(frame)
    writer.release()
    cap.release()
    return out


def test_camera_on_a_generated_video(work):
    from waste_edge.runtime.demo import write_demo_video

    video = lossless_copy(write_demo_video(work / "demo.mp4", seconds=1.0, fps=6), work / "demo.mkv")
    events = {}
    for side, run in (("arm64", arm64), ("host", host)):
        jsonl = work / f"camera-{side}.jsonl"
        proc = ok(run("camera", "--device", str(video), "--no-show", "--jsonl", str(jsonl)), f"{side} camera")
        events[side] = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert "end of source" in proc.stdout, proc.stdout
    assert len(events["arm64"]) == len(events["host"]) == 6  # a file source: every frame, none dropped
    assert [e["label"] for e in events["arm64"]] == [e["label"] for e in events["host"]]
    dp = max(max_dp(a["probabilities"], h["probabilities"]) for a, h in zip(events["arm64"], events["host"]))
    print(f"arm64 camera: {len(events['arm64'])} frames of a generated 640x480 video (FFV1), max |dp| {dp:.1e} (6 decimals)")
    assert dp <= MAX_DP


def _lines(stream, q: queue.Queue) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


def test_serve_answers_healthz_and_classify(photos, host_predictions):
    env = dict(os.environ, WASTE_EDGE_ARM64_CPU=CPUS[0])
    proc = subprocess.Popen([str(SCRIPT), "exec", "serve", "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 600
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=5)
            except queue.Empty:
                continue
            assert line is not None, "serve exited before listening:\n" + "".join(seen)
            seen.append(line)
            m = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        assert url, "serve did not start listening:\n" + "".join(seen)
        with urllib.request.urlopen(f"{url}/healthz", timeout=120) as r:
            assert r.status == 200 and json.load(r) == {"status": "ok"}
        photo = next(p for p in list_images(photos) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        kind = "image/png" if photo.suffix.lower() == ".png" else "image/jpeg"
        req = urllib.request.Request(f"{url}/api/v1/classify", data=photo.read_bytes(), headers={"Content-Type": kind})
        with urllib.request.urlopen(req, timeout=300) as r:
            answer = json.load(r)
        ref = host_predictions[str(photo)]
        dp = max(abs(answer["probabilities"][c] - float(ref[f"p_{c}"])) for c in answer["probabilities"])
        print(f"arm64 serve: /healthz ok, classify {photo.name} -> {answer['label']} (host predict {ref['label']}), |dp| {dp:.1e}")
        assert answer["label"] == ref["label"] and dp <= MAX_DP
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
