import os

import pytest

from tests.helpers import WASTE_SAMPLE

# torch and onnxruntime in one process fight for the 2 cores: keep each to its share.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def waste_sample():
    """The real labelled photos in ../shared; tests that need them skip cleanly without them."""
    if not (WASTE_SAMPLE / "TEST").is_dir():
        pytest.skip("../shared/data/waste-sample is not available")
    return WASTE_SAMPLE
