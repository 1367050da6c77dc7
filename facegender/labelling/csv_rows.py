"""The CSV's rows: its columns for a run (csv_header), the cells a score gives (score_cells;
its label by core.common.called_name) and which rows are faces to count (counted). Photos,
videos and every engine write rows of this one shape."""

from facegender.core.common import called_name


def csv_header(config):
    """The CSV's columns: a `tta` column says the scores are flip-averaged (--tta); a `time`
    column (seconds into the video; empty for a photo) and a last `track` column (the face's
    appearance in its video, tracks.py; empty for a photo) come with videos (video.py); a
    `face_found` column (true, or false for an image in which none was found, scored whole
    and not counted) whenever the images are searched for faces (config.faces_searched)."""
    where = ["path", "face", "x", "y", "w", "h"] if config.detect_faces else ["path"]
    videos = config.videos
    if videos:
        where.insert(1, "time")
    found = ["face_found"] if config.faces_searched else []
    return (where + found + ["p_male", "label", "threshold"] + (["tta"] if config.tta else [])
            + (["track"] if videos else []))


def score_cells(p_male, threshold, config, face_found=True):
    """The cells after a row's path (and face box): [face_found,] P(male), label,
    threshold[, tta]."""
    found = ([str(bool(face_found)).lower()]
             if config.faces_searched else [])
    return (*found, f"{p_male:.6f}", called_name(p_male, threshold), f"{threshold:.6g}",
            *(["flip"] if config.tta else []))


def counted(rows, header):
    """The rows that are faces: all but those of images in which no face was found."""
    if "face_found" not in header:
        return list(rows)
    k = header.index("face_found")
    return [row for row in rows if row[k] != "false"]

