"""A second ONNX runtime (OpenVINO CPU) gives the same answers as ONNX Runtime on the fixed-size fp32 graphs."""

from __future__ import annotations

import pytest

from waste_edge.export.parity import parity_images

pytest.importorskip("openvino", reason="the [portability] extra (openvino) is not installed")


@pytest.mark.slow
@pytest.mark.parametrize("which", ["clip", "lite0"])
def test_openvino_agrees_with_onnxruntime_on_real_photos(which, fixed_onnx, waste_sample):
    from waste_edge.export.portability import compare_runtimes

    result = compare_runtimes(fixed_onnx[which], [p for p, _ in parity_images(waste_sample / "TEST", 40)])
    assert result["n"] == 40 and result["frame"] == [640, 480]
    assert result["agreement"] == 1.0 and result["max_abs_dp"] <= 1e-4, result
