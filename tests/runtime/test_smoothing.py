import numpy as np
import pytest

from waste_edge.runtime.smoothing import Smoother

B, N = np.array([0.9, 0.1]), np.array([0.1, 0.9])
WEAK_N = np.array([0.45, 0.55])


def labels(smoother, seq):
    return [smoother.update(p)[0] for p in seq]


def test_window_one_is_pass_through():
    s = Smoother(2, window=1)
    assert labels(s, [B, N, B, WEAK_N]) == [0, 1, 0, 1]
    assert s.update(N)[1] == pytest.approx(0.9)


def test_ema_ignores_a_single_outlier_and_follows_a_real_change():
    s = Smoother(2, window=5, mode="ema", hysteresis=0.1)
    out = labels(s, [B, B, B, N, B, B])
    assert out == [0] * 6  # one disagreeing frame does not flip the label
    out = labels(s, [N] * 6)
    assert out[0] == 0 and out[-1] == 1  # a lasting change does, after a few frames


def test_ema_hysteresis_stops_flicker_near_the_boundary():
    near_b, near_n = np.array([0.52, 0.48]), np.array([0.48, 0.52])
    raw = [int(p.argmax()) for p in [near_b, near_n] * 10]
    assert len(set(raw)) == 2  # the raw labels flicker every frame
    s = Smoother(2, window=3, mode="ema", hysteresis=0.1)
    assert set(labels(s, [near_b, near_n] * 10)) == {0}


def test_ema_confidence_is_the_smoothed_probability():
    s = Smoother(2, window=3, mode="ema")  # alpha = 0.5
    s.update(B)
    idx, conf = s.update(N)
    assert idx == 0 and conf == pytest.approx(0.5)
    assert s.probabilities == pytest.approx([0.5, 0.5])


def test_majority_needs_a_strict_majority_of_the_window():
    s = Smoother(2, window=5, mode="majority")
    out = labels(s, [B, B, B, N, N])
    assert out == [0, 0, 0, 0, 0]  # 2 of 5 is not enough
    assert labels(s, [N]) == [1]  # 3 of 5 is
    idx, conf = s.update(N)  # window is now B N N N N
    assert idx == 1 and conf == pytest.approx((0.1 + 4 * 0.9) / 5)


def test_reset_and_validation():
    s = Smoother(2, window=4, mode="majority")
    labels(s, [N, N, N])
    s.reset()
    assert labels(s, [B]) == [0]
    with pytest.raises(ValueError):
        Smoother(2, window=0)
    with pytest.raises(ValueError):
        Smoother(2, window=3, mode="median")
    with pytest.raises(ValueError):
        Smoother(2, window=3, hysteresis=1.5)
