"""The ground floor: what every other room shares, and nothing else.

The class names and the cache root, the typed errors that the command line turns into one line
and exit code 2 (common), atomic writes of every output (outputs), the progress line of long
loops (progress), the switch that keeps TensorFlow's start-up lines off the terminal (quiet),
the cache of models converted to OpenVINO (conversions), shared by the classifier and the face
finder, bounded waits on worker threads and OpenVINO requests (workers), and where the package's
messages go: library code logs and returns, only the front doors print (messages). No TensorFlow is
imported here, ever.

May import: nothing of the project.
"""
