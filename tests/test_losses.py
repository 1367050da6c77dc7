import keras
import numpy as np
import pytest

from facegender.model.losses import BinaryFocalLoss


def focal_by_hand(y, p, alpha, gamma):
    """The textbook focal loss (Lin et al., 2017), averaged over the samples."""
    p_t = np.where(y == 1, p, 1 - p)
    alpha_t = np.where(y == 1, alpha, 1 - alpha)
    return np.mean(-alpha_t * (1 - p_t) ** gamma * np.log(p_t))


Y = np.array([[1.0], [0.0], [1.0], [0.0]])
P = np.array([[0.9], [0.2], [0.3], [0.7]])


def test_focal_loss_is_the_textbook_formula():
    assert float(BinaryFocalLoss(0.5, 1.5)(Y, P)) == pytest.approx(
        focal_by_hand(Y, P, 0.5, 1.5), rel=1e-5)


def test_focal_loss_refuses_to_drop_alpha():
    with pytest.raises(ValueError, match="class balancing"):
        BinaryFocalLoss(0.25, 2.0, apply_class_balancing=False)


def test_focal_loss_is_registered_and_reloads_with_a_model_from_h5(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    model.compile(optimizer="adam", loss=BinaryFocalLoss(0.3, 2.5))
    model.save(tmp_path / "m.h5")
    loss = keras.models.load_model(tmp_path / "m.h5").loss  # compile=True: the loss must load
    assert isinstance(loss, BinaryFocalLoss)
    assert (loss.alpha, loss.gamma) == (0.3, 2.5)
