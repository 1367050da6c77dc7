"""facegender: tell women from men in face photos, on a laptop CPU.

The package is a house of rooms by concern; each sub-package's docstring says what it is for
and which others it may import, so every import goes one way, down:

    cli         the command line: flags -> a frozen config -> the package
    labelling   predict.py's work: photos, videos, the audit, Ray
    training    train_model.py's work: the run, its stages, callbacks, cached features
    evaluation  test_script.py's work, metrics, quantification, curves, Grad-CAM
    drawing     figures, annotated photos, HTML pages
    runtime     running a saved model on OpenVINO or Keras
    model       the network, its loss, its sidecar, the TFLite export
    data        listing, decoding, attributes, the training-data plan, tf.data
    faces       finding faces and cutting the canonical crop
    core        errors, atomic outputs, progress, quiet TensorFlow, the conversion cache

docs/architecture.md draws who imports whom (docs/draw_imports.py writes it).
"""
