"""Running a saved model over image files, on OpenVINO or Keras: the runners, the backend
choice and the decode-ahead scoring loop (inference); the conversion to OpenVINO, its cache and
compiling it for the CPU (conversion); RunOptions, how to run a saved model, with its defaults
(options). Keras and TensorFlow are imported only when the Keras backend or a conversion needs
them.

May import: core, data, model.
"""
