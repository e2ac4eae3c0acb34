"""The edge promise: the runtime runs on numpy, onnxruntime, opencv, pillow, tqdm and the standard library.

Each check runs in a fresh interpreter started with `-S` and an explicit path (the repository and the
venv's site-packages), so no .pth file runs: a test venv may carry environment-only start-up hooks (the
torchvision CPU shim of ../shared/env), and the check must see only what the product itself imports.
"""

import json
import subprocess
import sys
import sysconfig
import textwrap

import cv2
import numpy as np
import pytest

from tests.helpers import REPO, save_image, synthetic_rgb
from tests.runtime.tiny_model import make_fused_model

BANNED = ("torch", "tensorflow", "sklearn", "open_clip", "onnx", "onnxscript", "skl2onnx", "keras", "tensorrt", "matplotlib")
ALLOWED_THIRD_PARTY = {"numpy", "onnxruntime", "cv2", "PIL", "tqdm"}


def run_clean(code: str) -> dict:
    env = {"PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-S", "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


REPORT = """
import json, sys, sysconfig
stdlib = set(sys.stdlib_module_names)
top = sorted({m.split('.')[0] for m in sys.modules})
print(json.dumps({"modules": top, "third_party": [m for m in top if m not in stdlib and m not in ("waste_edge", "__main__") and not m.startswith("_")], **RESULT}))
"""


def test_import_waste_edge_is_light():
    out = run_clean("import waste_edge\nRESULT = {'version': waste_edge.__version__}\n" + REPORT)
    assert out["third_party"] == []  # not even numpy: the lazy exports do no work at import


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("dep")
    model = make_fused_model(d / "m.onnx", channel_order="BGR")
    save_image(d / "imgs" / "a.png", synthetic_rgb("N", 1))
    writer = cv2.VideoWriter(str(d / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(4):
        writer.write(np.ascontiguousarray(synthetic_rgb("B", i)[..., ::-1]))
    writer.release()
    return d, model


def test_runtime_classifies_a_frame_without_heavy_imports(assets):
    d, model = assets
    code = f"""
    import pkgutil, importlib, numpy as np
    import waste_edge.runtime as rt
    for m in pkgutil.walk_packages(rt.__path__, 'waste_edge.runtime.'):  # every runtime module, the backends included
        importlib.import_module(m.name)
    from waste_edge import Classifier, open_source
    from waste_edge.runtime.camera import CameraConfig, run_camera
    from waste_edge.runtime.sinks import OutputOptions
    from waste_edge.runtime.predict import run_predict
    clf = Classifier({str(model)!r}, threads=1)
    frame = np.zeros((480, 640, 3), np.uint8); frame[..., 2] = 200  # red in BGR
    pred = clf.predict(frame)
    with open_source({str(d / 'v.avi')!r}) as src:
        summary = run_camera(clf, src, CameraConfig(output=OutputOptions(show=False), max_frames=3))
    counts = run_predict(clf, [{str(d / 'imgs')!r}], {str(d / 'p.csv')!r}, progress=False)
    RESULT = {{'label': pred.label, 'frames': summary.frames, 'rows': counts.rows}}
    """
    out = run_clean(textwrap.dedent(code) + REPORT)
    assert (out["label"], out["frames"], out["rows"]) == ("B", 3, 1)  # the work really ran
    assert not set(out["modules"]) & set(BANNED), set(out["modules"]) & set(BANNED)
    assert set(out["third_party"]) <= ALLOWED_THIRD_PARTY, out["third_party"]
    assert "onnxruntime" in out["third_party"]


def test_camera_cli_headless_without_heavy_imports(assets):
    d, model = assets
    code = f"""
    import io, contextlib
    from waste_edge.cli import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(['camera', '--device', {str(d / 'v.avi')!r}, '--model', {str(model)!r}, '--no-show', '--max-frames', '2', '--jsonl', '-'])
    RESULT = {{'rc': rc, 'events': len(buf.getvalue().splitlines())}}
    """
    out = run_clean(textwrap.dedent(code) + REPORT)
    assert out["rc"] == 0 and out["events"] == 2
    assert not set(out["modules"]) & set(BANNED)
    assert set(out["third_party"]) <= ALLOWED_THIRD_PARTY, out["third_party"]
