"""The classifier: MobileNetV2 backbone, small head, and safe saving and loading.

The saved model takes raw RGB pixels in 0..255 at its input size and outputs P(male): the
MobileNetV2 scaling (x / 127.5 - 1) is a layer inside it, so nobody who loads it needs to know
the preprocessing.
"""

import os
import socket

import keras

from facegender.core.common import ModelError
from facegender.core.outputs import atomic_path, write_json
# Imported for its side effect: it registers the focal loss, so compiled models reload.
from facegender.model import losses  # noqa: F401
# The sidecar and file checks need no TensorFlow, so they live in sidecar.py.
from facegender.model.sidecar import check_input_size, check_model_file, sidecar_path

BACKBONE_NAME = "mobilenetv2"
HEAD_NAME = "head"
SCALING_NAME = "mobilenet_scaling"
KERAS_IMAGENET_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def build_backbone(image_size, weights="imagenet"):
    """MobileNetV2 without its top. `weights` is 'imagenet', 'none' or a path to a weights file.

    Keras downloads the ImageNet weights unless they are already in ~/.keras/models; its download
    has no timeout, so it is bounded here and turned into a message that says what to pass.
    """
    shape = (image_size, image_size, 3)
    if weights in (None, "none"):
        return keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=shape,
                                              name=BACKBONE_NAME)
    if weights != "imagenet":
        if not os.path.isfile(weights):
            raise ModelError(f"{weights}: weights file not found; pass --weights PATH to a "
                             "MobileNetV2 no-top weights file, or --weights none")
        backbone = keras.applications.MobileNetV2(include_top=False, weights=None,
                                                  input_shape=shape, name=BACKBONE_NAME)
        try:
            backbone.load_weights(weights)
        except Exception as err:
            raise ModelError(f"{weights}: not MobileNetV2 no-top weights ({err}); pass "
                             "--weights PATH to a matching file") from None
        return backbone
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        return keras.applications.MobileNetV2(include_top=False, weights="imagenet",
                                              input_shape=shape, name=BACKBONE_NAME)
    except Exception as err:
        cached = os.path.join(os.path.expanduser("~"), ".keras", "models", KERAS_IMAGENET_FILE)
        raise ModelError(f"could not download the ImageNet weights ({type(err).__name__}: {err}); "
                         f"pass --weights PATH to a local MobileNetV2 no-top weights file "
                         f"(or place it at {cached})") from None
    finally:
        socket.setdefaulttimeout(old_timeout)


def build_classifier_head(dense_units=128, dropout=0.3):
    """The reference head on top of the backbone's feature map."""
    return keras.Sequential([
        keras.layers.GlobalAveragePooling2D(name="avg_pool"),
        keras.layers.Dense(dense_units, activation="relu", name="head_dense"),
        keras.layers.Dropout(dropout, name="head_dropout"),
        keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="p_male"),
    ], name=HEAD_NAME)


def build_model(image_size=224, weights="imagenet", trainable_layers=None, dense_units=128,
                dropout=0.3, init_model=None):
    """Raw-pixel input -> MobileNetV2 scaling -> backbone -> head -> P(male).

    `trainable_layers` is how many of the backbone's top layers are trained (None: all, 0: none).
    A pretrained backbone runs its batch norm in inference mode, as transfer learning requires:
    its statistics came from ImageNet and small batches of faces would wreck them. A backbone
    trained from scratch (`weights='none'`) has no statistics yet, so it learns them.

    `init_model` is a classifier saved by train_model.py whose weights replace every weight here
    (`weights` is then not read): to fine-tune a trained model further, for example at a larger
    `image_size` than it was trained at, which the convolutions and the pooled head allow.
    """
    pretrained = init_model is not None or weights not in (None, "none")
    backbone = build_backbone(image_size, "none" if init_model is not None else weights)
    set_trainable_layers(backbone, trainable_layers)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=SCALING_NAME)(inputs)
    x = backbone(x, training=False if pretrained else None)
    outputs = build_classifier_head(dense_units, dropout)(x)
    model = keras.Model(inputs, outputs, name="facegender")
    if init_model is not None:
        copy_weights(load_model(init_model), model, init_model)
    return model


def copy_weights(source, target, source_path):
    """Set every weight of `target` from `source`, a model of the same layers at any input size."""
    pairs = list(zip(source.weights, target.weights))
    if len(source.weights) != len(target.weights) or any(
            tuple(s.shape) != tuple(t.shape) for s, t in pairs):
        raise ModelError(f"{source_path}: its layers do not match the model being built; pass "
                         "a model saved by train_model.py and the --dense_units it was trained "
                         "with")
    for s, t in pairs:
        t.assign(s)


# Where the cached-feature fine-tune (train_model.py --feature_epochs) cuts the backbone: the end
# of its 96-channel stage. Blocks 13-16 and the final 1x1 convolution above it hold most of the
# backbone's weights but work at its lowest resolutions, so they cost a small part of its
# compute per image.
FEATURE_MAP_LAYER = "block_12_add"


def top_on_feature_maps(model, layer=FEATURE_MAP_LAYER):
    """A model from the backbone's feature maps at `layer` to P(male).

    It is built from the layers of `model` above `layer` (the same objects, so training it
    trains `model`), with batch norm in inference mode as in `build_model`.
    """
    backbone = backbone_of(model)
    cut = backbone.get_layer(layer).output
    top = keras.Model(cut, backbone.output)
    inputs = keras.Input(tuple(cut.shape[1:]))
    return keras.Model(inputs, head_of(model)(top(inputs, training=False)))


def set_trainable_layers(backbone, trainable_layers):
    """Freeze all but the top `trainable_layers` layers of the backbone (None: train all)."""
    layers = backbone.layers
    n = len(layers) if trainable_layers is None else max(0, min(trainable_layers, len(layers)))
    backbone.trainable = n > 0
    for i, layer in enumerate(layers):
        layer.trainable = i >= len(layers) - n


def input_size(model):
    """The square input size a model expects."""
    return int(model.input_shape[1])


# ---------------------------------------------------------------------------
# Layer access: the layer names of a built classifier are known here only

def _layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        raise ModelError(f"no layer '{name}': expected a classifier built by train_model.py "
                         f"(Input -> scaling -> '{BACKBONE_NAME}' -> '{HEAD_NAME}'); this model "
                         f"has {[layer.name for layer in model.layers]}") from None


def backbone_of(model):
    """The MobileNetV2 backbone of a classifier built by `build_model`; ModelError if none."""
    return _layer(model, BACKBONE_NAME)


def scaling_of(model):
    """The layer that maps raw pixels 0..255 to MobileNetV2's -1..1, inside a classifier."""
    return _layer(model, SCALING_NAME)


def head_of(model):
    """The head (pooling, dense, P(male)) of a classifier built by `build_model`; ModelError if
    none."""
    return _layer(model, HEAD_NAME)


def split_at_backbone(model):
    """(model from the raw-pixel input to the backbone's feature map, the head on top of it).

    For Grad-CAM, which needs the feature map as an output. Works on models built by
    `build_model` (Input -> scaling -> backbone -> head); ModelError for any other.
    """
    backbone_of(model)
    head = head_of(model)
    inputs = keras.Input(model.input_shape[1:])
    x = inputs
    # Re-apply, in order, every layer between the input and the head (the scaling and the
    # backbone), sharing their weights, so the feature map comes out as a model output.
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer is head:
            break
        x = layer(x)
    return keras.Model(inputs, x, name="features"), head


# ---------------------------------------------------------------------------
# Saving and loading

def save_model(model, path, sidecar=None):
    """Save the deliverable atomically: inference-only, then its JSON sidecar.

    Without the optimizer the file holds no training configuration either, so it loads
    uncompiled (`keras.models.load_model(path, compile=False)`, as `load_model` does). The model
    is written to a temporary name beside `path` and renamed into place, so a crash during the
    save leaves the previous file, never a broken one.
    """
    with atomic_path(path) as tmp:
        model.save(tmp, include_optimizer=False)
    if sidecar is not None:
        write_json(sidecar_path(path), sidecar)


def load_model(path, safe_mode=True):
    """Load a saved classifier for inference, turning every failure into one clear line."""
    check_model_file(path)
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "lambda" in text.lower() or "unsafe" in text.lower():
            raise ModelError(f"{path}: refused, the model carries code that would run on load "
                             "(a Lambda layer); pass --unsafe only if you trust its source"
                             ) from None
        raise ModelError(f"{path}: not a loadable Keras model ({type(err).__name__}: {text}); "
                         "pass a model saved by train_model.py") from None
    shape = model.input_shape
    out = model.output_shape
    if (len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[1] != shape[2]
            or out[-1] != 1):
        raise ModelError(f"{path}: model takes {shape} and gives {out}; expected square RGB "
                         "images in and one probability out (a model from train_model.py)")
    check_input_size(path, shape)
    return model
