"""Losses for the face-gender classifier.

Importing this module registers them with Keras, so a saved model that was compiled with them
reloads in a fresh process without `custom_objects`.
"""

import keras


# Registered as "facegender>BinaryFocalLoss": the name that training checkpoints (.keras) and
# models shipped before version 0.4 carry in their training config, so they reload compiled.
@keras.saving.register_keras_serializable(package="facegender")
class BinaryFocalLoss(keras.losses.BinaryFocalCrossentropy):
    """Binary focal loss (Lin et al., 2017) on sigmoid probabilities.

        loss = -alpha_t * (1 - p_t) ** gamma * log(p_t)

    where p_t is the probability given to the true class and alpha_t is `alpha` for positives
    (male) and `1 - alpha` for negatives. Focusing (`gamma` > 0) shrinks the loss of examples
    the model already gets right, so training spends its effort on the hard ones.

    This is Keras' `BinaryFocalCrossentropy` with class balancing always on: without it Keras
    silently ignores `alpha`. The subclass only fixes that switch and keeps the registered name
    that saved models refer to.
    """

    def __init__(self, alpha=0.5, gamma=1.5, name="binary_focal_loss",
                 apply_class_balancing=True, **kwargs):
        # Configs saved by this class carry apply_class_balancing=True; anything else would
        # drop alpha, which is what this class exists to prevent.
        if not apply_class_balancing:
            raise ValueError("BinaryFocalLoss always applies class balancing (alpha); use "
                             "keras.losses.BinaryFocalCrossentropy for a loss without it")
        super().__init__(apply_class_balancing=True, alpha=float(alpha), gamma=float(gamma),
                         name=name, **kwargs)
