"""The toolkit's loss, where the project's first layout had it: a facade over
`facegender.model.losses`, the real code (the package never imports this file).

Importing either registers `BinaryFocalLoss` with Keras as "facegender>BinaryFocalLoss", the
name that models and checkpoints saved before the package carry, so they reload compiled.
"""

from facegender.model.losses import BinaryFocalLoss

__all__ = ["BinaryFocalLoss"]
