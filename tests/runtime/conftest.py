"""Fixtures shared by the camera and predict tests: a tiny fused BGR model and a classifier over it."""

import pytest

from tests.runtime.tiny_model import make_fused_model
from waste_edge.runtime.classifier import Classifier


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_fused_model(tmp_path_factory.mktemp("m") / "bgr.onnx", channel_order="BGR")


@pytest.fixture(scope="module")
def clf(model):
    with Classifier(model, threads=1) as c:
        yield c
