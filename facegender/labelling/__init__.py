"""Labelling a collection from a LabelConfig (config): photos cut into faces, scored and
written as CSV rows (photos), videos sampled frame by frame (video) and their faces linked
into tracks (tracks), the audit of the share of women with its intervals (audit) and the faces
its page shows (gallery), and the same work as a resumable Ray job (ray_engine).

May import: core, faces, data, model, runtime, drawing, evaluation.
"""
