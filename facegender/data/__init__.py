"""Images and the training-data plan: listing the class folders and their image files
(listing), decoding files into the model's input, cut to the face where the model wants it
(decoding; neither imports TensorFlow), the per-image attributes of attributes.csv
(attributes), which images train, how often each is drawn and which validate (splits), and the
tf.data pipeline with its augmentation layers (pipeline, augment: TensorFlow, imported only by
training).

May import: core, faces.
"""
