"""Labelling a collection from a LabelConfig (config), end to end on this machine or on Ray
(label): the files listed and a photo decoded
(inputs), its faces found and cut to the model's crop (photo_faces), scored into rows of the
CSV's shape (photos, csv_rows), written at the end with the summary of what was found
(results); videos sampled frame by frame (video) and their faces linked into tracks
(tracks), the audit of the share of women with its intervals (audit) and the faces
its page shows (gallery), and the same work as a resumable Ray job (ray_engine).

May import: core, faces, data, model, runtime, drawing, evaluation.
"""
