"""What a training run ends with (`TrainingResult`, returned by `run.train`) and the text that
train_model.py prints of it (`training_report`). It needs no TensorFlow: a program reads the
numbers, the script prints the text."""

import dataclasses

from facegender.faces.finder import Geometry

# The score the decision threshold was tuned for (callbacks.threshold_criterion), in words.
TUNED_FOR = {"macro_f1": "macro-F1", "worst_recall": "the worst (source, class) recall"}


@dataclasses.dataclass(frozen=True)
class TrainingResult:
    """The saved model's scores on the validation data at its tuned threshold, and the files
    the run wrote.

    Attributes
    ----------
    threshold : float
        The decision threshold on P(male) written to the sidecar.
    tuned_for : str
        What the threshold was chosen for: "macro_f1" or "worst_recall" (the score that picked
        the kept epoch).
    validation : dict
        `metrics.evaluation_report` at `threshold`: macro_f1, accuracy, per_class_accuracy
        ({class: (correct, total)}), confusion_matrix, report_text.
    validation_sources : tuple of dict
        `metrics.group_table` rows at `threshold`, one per validation source (folder or
        --balance_by group): group, images, macro_f1, female, male, ...
    model, sidecar, curves, architecture : str
        The files written: the model, its JSON sidecar, training_curves.png, and
        model_architecture.png (or .txt without graphviz).
    unreadable_images : tuple of str
        Training and validation images that could not be decoded, skipped (also listed in the
        sidecar).
    face_geometry : Geometry or None
        The crop every image was cut to (None: images used as given).
    images_without_a_face : int
        Training and validation images in which no face was found, used as given.
    """

    threshold: float
    tuned_for: str
    validation: dict
    validation_sources: tuple
    model: str
    sidecar: str
    curves: str
    architecture: str
    unreadable_images: tuple = ()
    face_geometry: Geometry | None = None
    images_without_a_face: int = 0

    @property
    def written(self):
        """The files the run wrote, in the order they are named."""
        return self.model, self.sidecar, self.curves, self.architecture


def training_report(result):
    """The end of a training run as text: the classification report at the tuned threshold,
    each class's accuracy, each validation source's macro-F1 (when there are several), the
    files written, the images skipped and the faces not found.

    Parameters
    ----------
    result : TrainingResult

    Returns
    -------
    report : str
        Lines without a trailing newline.
    """
    lines = [f"validation at threshold {result.threshold:.2f} "
             f"(tuned for {TUNED_FOR[result.tuned_for]}):",
             result.validation["report_text"]]
    lines += [f"  {name:>6} accuracy: {ok}/{n}"
              for name, (ok, n) in result.validation["per_class_accuracy"].items()]
    if len(result.validation_sources) > 1:
        lines += [f"  {row['group']}: macro-F1 {row['macro_f1']:.4f}"
                  for row in result.validation_sources]
    lines.append("wrote " + ", ".join(result.written))
    if result.unreadable_images:
        lines.append(f"skipped {len(result.unreadable_images)} unreadable image(s); listed in "
                     "the sidecar")
    if result.face_geometry is not None:
        lines.append(f"faces cut to {result.face_geometry}; no face found in "
                     f"{result.images_without_a_face} image(s), used as given")
    return "\n".join(lines)
