import math

import keras
import numpy as np
import pytest

from losses import BinaryFocalLoss


def focal_by_hand(y, p, alpha, gamma):
    p_t = p if y == 1 else 1 - p
    alpha_t = alpha if y == 1 else 1 - alpha
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


@pytest.mark.parametrize("alpha,gamma", [(0.5, 1.5), (0.25, 2.0), (0.75, 0.0)])
def test_focal_loss_matches_hand_computation(alpha, gamma):
    y = np.array([[1.0], [0.0], [1.0], [0.0]])
    p = np.array([[0.9], [0.2], [0.3], [0.7]])
    expected = np.mean([focal_by_hand(yi, pi, alpha, gamma) for yi, pi in zip(y[:, 0], p[:, 0])])
    got = float(BinaryFocalLoss(alpha, gamma)(y, p))
    assert got == pytest.approx(expected, rel=1e-5)


def test_focal_loss_with_gamma_zero_and_half_alpha_is_half_cross_entropy():
    y = np.array([[1.0], [0.0], [1.0]])
    p = np.array([[0.8], [0.4], [0.1]])
    bce = float(keras.losses.BinaryCrossentropy()(y, p))
    assert float(BinaryFocalLoss(0.5, 0.0)(y, p)) == pytest.approx(bce / 2, rel=1e-5)


def test_focal_loss_equals_keras_with_class_balancing():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (64, 1)).astype("float32")
    p = rng.uniform(0.01, 0.99, (64, 1)).astype("float32")
    keras_loss = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.5,
                                                      gamma=1.5)
    assert float(BinaryFocalLoss(0.5, 1.5)(y, p)) == pytest.approx(float(keras_loss(y, p)),
                                                                   rel=1e-4)


def test_confident_right_answers_cost_less_than_with_cross_entropy():
    y, p = np.array([[1.0]]), np.array([[0.95]])
    focal = float(BinaryFocalLoss(0.5, 1.5)(y, p))
    assert focal < 0.5 * float(keras.losses.BinaryCrossentropy()(y, p)) * 0.1


def test_focal_loss_round_trips_through_keras_serialization():
    loss = BinaryFocalLoss(alpha=0.3, gamma=2.5)
    config = keras.saving.serialize_keras_object(loss)
    assert "facegender" in config["registered_name"]
    again = keras.saving.deserialize_keras_object(config)
    assert isinstance(again, BinaryFocalLoss)
    assert (again.alpha, again.gamma) == (0.3, 2.5)


def test_focal_loss_refuses_to_drop_alpha():
    with pytest.raises(ValueError, match="class balancing"):
        BinaryFocalLoss(0.25, 2.0, apply_class_balancing=False)


def test_shipped_model_reloads_compiled_with_its_focal_loss():
    # model_balanced.h5 was saved by the hand-written loss this class replaced; its training
    # config names "facegender>BinaryFocalLoss" with only name, reduction, alpha and gamma.
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "model_balanced.h5")
    model = keras.models.load_model(path)  # compile=True: the loss must deserialize
    loss = model.loss
    assert isinstance(loss, BinaryFocalLoss)
    assert (loss.alpha, loss.gamma, loss.apply_class_balancing) == (0.5, 1.5, True)
    y, p = np.array([[1.0], [0.0]]), np.array([[0.9], [0.2]])
    expected = np.mean([focal_by_hand(1, 0.9, 0.5, 1.5), focal_by_hand(0, 0.2, 0.5, 1.5)])
    assert float(loss(y, p)) == pytest.approx(expected, rel=1e-5)
