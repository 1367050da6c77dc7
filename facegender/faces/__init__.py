"""Finding a face and cutting it to the model's one canonical crop: the face geometry
(aligned on five landmarks, or the finder's box), MTCNN on OpenVINO or TensorFlow, the landmark
cache (finder), and MTCNN's networks converted to OpenVINO and run with NumPy and OpenCV
(mtcnn_openvino).

May import: core.
"""
