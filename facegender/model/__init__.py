"""The classifier itself: the MobileNetV2 network, saving and loading it safely (network),
its loss (losses), its JSON sidecar, the one place that writes and reads it (sidecar), and the
TensorFlow Lite export (export).

May import: core, faces, data.
"""
