"""Issue 16 end to end: a real `serve` subprocess collects uncertain frames of a video, the labels are posted
through the Review API the page uses, `POST /api/v1/adapt` writes a new model and swaps it in, and
`/api/v1/status` reports its sha256; a classify call shows the new head at work. Tiny model (no torch)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.adapt.conftest import NEW_B, NEW_N, old_domain, solid
from tests.runtime.tiny_model import make_fused_model
from tests.serve.conftest import ServeProcess, wait_for, write_video
from waste_edge._io import file_sha256
from waste_edge.runtime.rehearsal import build_rehearsal_set, rehearsal_path, save_rehearsal

pytestmark = pytest.mark.usefixtures("serve_extra")


def _bgr(rgb: tuple[int, int, int], seed: int) -> np.ndarray:
    return np.ascontiguousarray(solid(rgb, seed)[..., ::-1])


def test_collect_label_adapt_swap_over_http(tmp_path):
    import httpx

    model = make_fused_model(tmp_path / "models" / "tiny.onnx", channel_order="BGR", with_embedding=True)
    feats, labels = old_domain()
    save_rehearsal(build_rehearsal_set(feats, labels, classes=["B", "N"], encoder="test:mean-colour", per_class=16), rehearsal_path(model))
    # Green glass (N, which the old head calls B at ~0.87: below --collect-below 0.95) and yellow peel (B), taking turns.
    video = write_video(tmp_path / "bin.mp4", [_bgr(NEW_N if (i // 5) % 2 == 0 else NEW_B, i) for i in range(40)], fps=20)
    folder = tmp_path / "collected"
    proc = ServeProcess(["--device", str(video), "--loop", "--realtime", "--model", str(model), "--backend", "cpu",
                         "--collect", str(folder), "--collect-below", "0.95", "--collect-every", "0", "--collect-dedup", "-1",
                         "--collect-max", "30"], tmp_path)
    try:
        with httpx.Client(base_url=proc.url, timeout=120) as c:
            old_sha = c.get("/api/v1/status").json()["model"]["sha256"]
            assert old_sha == file_sha256(model)
            queue = wait_for(lambda: (q := c.get("/api/v1/review").json()) and len(q["frames"]) >= 8 and q, 120, "8 collected frames")
            assert all(f["label"] is None and f["guess"] == "B" and f["confidence"] < 0.95 for f in queue["frames"])
            first = queue["frames"][0]["file"]
            img = c.get(f"/api/v1/review/frame/{first}")
            assert img.status_code == 200 and cv2.imdecode(np.frombuffer(img.content, np.uint8), cv2.IMREAD_COLOR) is not None
            assert c.get("/api/v1/review/frame/../bin.mp4").status_code == 404
            bad = c.post("/api/v1/review/labels", json={"labels": {first: "plastic"}})
            assert bad.status_code == 422 and "unknown label" in bad.json()["detail"]
            # Every collected frame is the green glass: the person at the bin says N.
            posted = c.post("/api/v1/review/labels", json={"labels": {f["file"]: "N" for f in queue["frames"]}})
            assert posted.status_code == 200 and posted.json()["counts"] == {"N": len(queue["frames"])}
            assert (folder / "labels.csv").read_text().count(",N") == len(queue["frames"])

            glass = cv2.imencode(".png", _bgr(NEW_N, 999))[1].tobytes()
            before = c.post("/api/v1/classify", content=glass, headers={"Content-Type": "image/png"}).json()
            assert before["label"] == "B"
            adapted = c.post("/api/v1/adapt", json={})
            assert adapted.status_code == 200, adapted.text
            new = adapted.json()["model"]
            assert new["sha256"] != old_sha and new["sha256"] == file_sha256(new["path"])
            status = c.get("/api/v1/status").json()
            assert status["model"]["sha256"] == new["sha256"] and status["model_swaps"] == 1
            after = c.post("/api/v1/classify", content=glass, headers={"Content-Type": "image/png"}).json()
            assert after["label"] == "N" and after["model"]["sha256"] == new["sha256"]
            # The cameras kept running through the swap.
            n = status["cameras"][0]["counters"]["frames"]
            wait_for(lambda: c.get("/api/v1/status").json()["cameras"][0]["counters"]["frames"] > n + 3, 60, "frames after the swap")
    finally:
        assert proc.terminate() == 0, proc.output
