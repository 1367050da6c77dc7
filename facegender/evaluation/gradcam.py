"""Why the model errs: Grad-CAM on the classifier (on Keras, or on OpenVINO from the cached
conversion) and the contact sheet of the most confident mistakes with their heat maps.
The curves' numbers are in curves.py.
"""

import os

import numpy as np

from facegender.core.common import CLASS_NAMES, ModelError, called, called_name
from facegender.data import decoding
from facegender.drawing import plots

SHEET_MAX_IMAGES = 48  # mistakes shown on the contact sheet, 6 rows of plots.SHEET_COLUMNS


# ---------------------------------------------------------------------------
# Grad-CAM

def _logit(head, features):
    """The head's output before its final sigmoid: its gradient does not vanish when P is 0 or 1."""
    import keras
    x = features
    for layer in head.layers[:-1]:
        x = layer(x, training=False)
    last = head.layers[-1]
    sigmoid = getattr(getattr(last, "activation", None), "__name__", "") == "sigmoid"
    if isinstance(last, keras.layers.Dense) and sigmoid:
        return keras.ops.matmul(x, last.kernel) + last.bias
    # Any other last layer: invert its probability (saturates, but stays correct).
    p = keras.ops.clip(last(x, training=False), 1e-7, 1 - 1e-7)
    return keras.ops.log(p) - keras.ops.log(1 - p)


def gradcam(model, images, threshold=0.5, batch_size=32, classes=None):
    """Grad-CAM heat maps for the class each image is predicted as, and P(male).

    `images` are raw RGB pixels (n, size, size, 3) in 0..255. `classes` (0 female, 1 male per
    image) picks the class to explain instead of the one predicted at `threshold`. Returns
    (maps, p_male): maps are float32 (n, size, size) in 0..1, 1 where the backbone's features
    pushed hardest towards the class; an image where nothing pushed that way gets an all-zero
    map. Raises ModelError for a model not built by train_model.py.
    """
    import tensorflow as tf

    from facegender.model import network as model_lib
    try:
        features_model, head = model_lib.split_at_backbone(model)
    except ModelError as err:
        raise ModelError(f"Grad-CAM needs a model from train_model.py: {err}") from None
    images = np.asarray(images, dtype=np.float32)
    maps, probs = [], []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size])
        features = features_model(batch, training=False)
        with tf.GradientTape() as tape:
            tape.watch(features)
            logit = _logit(head, features)[:, 0]
        grads = tape.gradient(logit, features)
        p_male = tf.sigmoid(logit).numpy()
        # Male raises the logit, female lowers it.
        target = (called(p_male, threshold) == 1 if classes is None
                  else np.asarray(classes)[start:start + batch_size] == 1)
        sign = np.where(target, 1.0, -1.0).astype(np.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True) * sign[:, None, None, None]
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]
        cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0].numpy()
        peak = cam.reshape(len(cam), -1).max(axis=1)
        maps.append(cam / np.where(peak > 0, peak, 1.0)[:, None, None])
        probs.append(p_male)
    return np.concatenate(maps).astype(np.float32), np.concatenate(probs)


class KerasGradCam:
    """Grad-CAM (`gradcam`) of a Keras classifier: TensorFlow computes the gradients."""

    def __init__(self, model):
        self.model = model
        self.image_size = int(model.input_shape[1])

    def maps(self, images, classes, batch_size=32):
        return gradcam(self.model, images, batch_size=batch_size, classes=classes)[0]


class OpenVINOGradCam:
    """Grad-CAM of a classifier converted for OpenVINO, with no TensorFlow: the same maps as
    `gradcam`, from the converted model's own feature maps and head weights.

    The head of a train_model.py classifier is global average pooling, a ReLU dense layer and a
    sigmoid dense layer, so the logit's gradient with respect to a feature map is the same at
    every position: g = W1 (w2 * [h > 0]) / (H W), h being the dense layer's ReLU output. Grad-
    CAM's channel weights (the gradient's mean over positions) are then g itself, known from
    the weights and h: no backward pass is needed, and the maps come out as Grad-CAM's (the
    1 / (H W) cancels in the normalisation). `from_model` returns None for a graph whose head is
    not that shape (the caller falls back to KerasGradCam).
    """

    def __init__(self, compiled, w1, w2, image_size):
        self.compiled, self.w1, self.w2, self.image_size = compiled, w1, w2, image_size

    @classmethod
    def from_model(cls, converted):
        import openvino as ov

        def source(node, i=0):
            return node.input_value(i).get_node()

        def constant(node, i=1):
            c = source(node, i)
            return c.get_data().astype(np.float64) if c.get_type_name() == "Constant" else None

        def dense_weights(matmul):  # (inputs, outputs), whatever the MatMul's transposes
            w = constant(matmul)
            if w is None or matmul.get_type_name() != "MatMul":
                return None
            attributes = matmul.get_attributes()
            if attributes.get("transpose_a"):
                return None
            return w.T if attributes.get("transpose_b") else w

        try:
            chain, node = [], source(converted.get_results()[0])
            for kind in ("Sigmoid", "Add", "MatMul", "Relu", "Add", "MatMul", "ReduceMean"):
                if node.get_type_name() != kind:
                    return None
                chain.append(node)
                node = source(node)
            _, logit, matmul2, relu, _, matmul1, pooled = chain
            w1, w2 = dense_weights(matmul1), dense_weights(matmul2)
            features = pooled.input_value(0)
            shape = features.get_partial_shape()
            axes = constant(pooled)
            # OpenVINO keeps the converted feature map channels first: (n, channels, h, w).
            if (w1 is None or w2 is None or w2.shape[1] != 1 or shape.rank.get_length() != 4
                    or axes is None or sorted(axes.astype(int).tolist()) != [2, 3]
                    or w1.shape[0] != shape[1].get_length()):
                return None
            model = ov.Model([features, relu.output(0), logit.output(0)],
                             converted.get_parameters())
            size = converted.input(0).get_partial_shape()[1].get_length()
            compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        except Exception:  # a graph this reading does not know: Keras computes the maps
            return None
        return cls(compiled, w1, w2[:, 0], size)

    def maps(self, images, classes, batch_size=32):
        import cv2
        images = np.asarray(images, np.float32)
        out = []
        for start in range(0, len(images), batch_size):
            features, hidden, _ = self.compiled(images[start:start + batch_size]).values()
            g = ((hidden > 0) * self.w2) @ self.w1.T  # (n, channels)
            sign = np.where(np.asarray(classes)[start:start + batch_size] == 1, 1.0, -1.0)
            cam = np.maximum(np.einsum("nc,nchw->nhw", g * sign[:, None], features), 0)
            for m in cam.astype(np.float32):
                # Bilinear with half-pixel centres, as tf.image.resize does in `gradcam`.
                m = cv2.resize(m, images.shape[2:0:-1], interpolation=cv2.INTER_LINEAR)
                peak = m.max()
                out.append(m / peak if peak > 0 else m)
        return np.stack(out).astype(np.float32)


def grad_cam_for(model_path, cache_dir=None, backend="auto", safe_mode=True):
    """The Grad-CAM of the model saved at `model_path`: on its cached OpenVINO conversion when
    there is one and the backend is not Keras (no TensorFlow imported), else on Keras."""
    from facegender.runtime import conversion
    if backend != "keras" and conversion.openvino_available():
        converted, _ = conversion.cached_conversion(model_path, cache_dir)
        explain = converted is not None and OpenVINOGradCam.from_model(converted)
        if explain:
            return explain
    from facegender.model import network as model_lib
    return KerasGradCam(model_lib.load_model(model_path, safe_mode=safe_mode))


# ---------------------------------------------------------------------------
# Contact sheet of the misclassified images

def most_confident_mistakes(y_true, scores, threshold, limit=SHEET_MAX_IMAGES):
    """Indices of the misclassified images, most confident first, at most `limit`; and how many
    misclassified images that leaves out.

    Confidence is the probability the model gave its (wrong) prediction: P(male) for a female
    called male, 1 - P(male) for a male called female.
    """
    y, p = np.asarray(y_true), np.asarray(scores, dtype=float)
    pred = called(p, threshold)
    wrong = np.flatnonzero(pred != y)
    confidence = np.where(pred[wrong] == 1, p[wrong], 1 - p[wrong])
    order = wrong[np.argsort(-confidence, kind="stable")]
    return order[:limit], max(0, len(order) - limit)


def misclassified_sheet(explain, paths, y_true, scores, threshold, path,
                        limit=SHEET_MAX_IMAGES, batch_size=8, reader=None):
    """Draw the most confident mistakes among `paths`, at most `limit`, with Grad-CAM heat maps
    (`explain`: a KerasGradCam or OpenVINOGradCam, see grad_cam_for), into `path`, as the model
    saw them (`reader`: the decoding.ImageReader they were scored with).

    Only the shown mistakes are decoded and explained, so its memory does not grow with the
    number of mistakes; they go through the explaining model `batch_size` at a time, few,
    since its activations grow with the batch and a second network in memory is what the
    sheet costs. Returns {"path", "shown", "left_out", "heat_maps", "note"}; with no
    mistakes nothing is written.
    A model that Grad-CAM cannot split still gets a sheet, without heat maps, saying why.
    """
    chosen, left_out = most_confident_mistakes(y_true, scores, threshold, limit)
    result = {"path": path, "shown": len(chosen), "left_out": left_out, "heat_maps": True,
              "note": ""}
    if len(chosen) == 0:
        return result
    reader = reader or decoding.ImageReader(explain.image_size)
    images = np.stack([reader(paths[i])[0] for i in chosen])
    try:
        predicted = called(np.asarray(scores)[chosen], threshold)
        maps = explain.maps(images, predicted, batch_size)
    except ModelError as err:
        maps, result["heat_maps"], result["note"] = None, False, f"no heat maps: {err}"
    captions = []
    for i in chosen:
        name = os.path.basename(paths[i])
        name = name if len(name) <= 26 else name[:11] + "..." + name[-12:]
        predicted = called_name(scores[i], threshold)
        captions.append(f"{name}\ntrue {CLASS_NAMES[int(y_true[i])]}, called {predicted}\n"
                        f"P(male) {scores[i]:.3f}")
    if maps is not None:
        # An all-zero map means no region pushed towards the predicted class: say so.
        captions = [c + (", map empty" if m.max() == 0 else "") for c, m in zip(captions, maps)]
    total = len(chosen) + left_out
    title = (f"{total} misclassified at threshold {threshold:.2f}, most confident first"
             + (f"; {left_out} more not shown" if left_out else "")
             + ("\nno heat maps: the model is not one from train_model.py" if maps is None
                else "\nheat map: Grad-CAM for the predicted class (red: drove the decision)"))
    plots.save(plots.contact_sheet_figure(images, captions, title, maps), path)
    return result
