"""What every module shares and nothing else: the class names and the error types that the
scripts turn into one line and exit code 2. It imports nothing of the project (and no
TensorFlow), so any module may import it."""

CLASS_NAMES = ("female", "male")  # class index 0 is female, 1 is male: the model outputs P(male)


class DataError(Exception):
    """Data that cannot be used; the message names the path and says what to do."""


class ModelError(Exception):
    """A model or weights file that cannot be used; the message names it and says what to do."""
