"""Losses for the face-gender classifier.

Importing this module registers them with Keras, so a saved model that was compiled with them
reloads in a fresh process without `custom_objects`.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="facegender")
class BinaryFocalLoss(keras.losses.Loss):
    """Binary focal loss (Lin et al., 2017) on sigmoid probabilities.

        loss = -alpha_t * (1 - p_t) ** gamma * log(p_t)

    where p_t is the probability given to the true class and alpha_t is `alpha` for positives
    (male) and `1 - alpha` for negatives. Focusing (`gamma` > 0) shrinks the loss of examples
    the model already gets right, so training spends its effort on the hard ones.

    It equals `keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha, gamma)`;
    it is kept as a class of ours so that the saved model names the loss it was trained with
    and `alpha` cannot be silently ignored.
    """

    def __init__(self, alpha=0.5, gamma=1.5, name="binary_focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        y_true = ops.cast(ops.reshape(y_true, ops.shape(y_pred)), y_pred.dtype)
        eps = keras.config.epsilon()
        p = ops.clip(y_pred, eps, 1.0 - eps)
        p_t = y_true * p + (1.0 - y_true) * (1.0 - p)
        alpha_t = y_true * self.alpha + (1.0 - y_true) * (1.0 - self.alpha)
        loss = -alpha_t * ops.power(1.0 - p_t, self.gamma) * ops.log(p_t)
        return ops.mean(loss, axis=-1)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}
