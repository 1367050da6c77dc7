"""The faces an audit page shows (predict.py --report): the labelled sample's mistakes and the
collection's faces nearest the threshold, each cut again as the model saw it. Above audit
(whose CSV readers it uses) and drawing.report (whose tiles it makes), so neither imports the
other back."""

from facegender.core.common import CLASS_NAMES, DataError
from facegender.labelling.audit import counted_rows, read_rows


def faces_to_show(config, rates, threshold, image_size, geometry, detector):
    """Gallery tiles (image as the model saw it, caption lines, kind) for report.audit_page:
    the mistakes on --audit_sample, most confident first, then the collection's faces nearest
    the threshold. Each face is cut again as it was for scoring (the photo decoded, its faces
    found again, face k taken; a video's frame read again at its time)."""
    from facegender.data import decoding
    from facegender.drawing import report
    tiles, shown = [], set()
    if rates is not None and rates.sample:
        paths, true, scores = zip(*rates.sample)
        y = [CLASS_NAMES.index(t) for t in true]
        wrong, _ = report.gallery_indices(y, scores, threshold, unsure=0)
        reader = decoding.ImageReader(image_size, geometry, decoding.main_faces(
            [paths[i] for i in wrong], geometry, config.cache_dir, 0, config.backend))
        tiles += [(report.tile_image(reader(paths[i])[0]),
                   report.caption(paths[i], scores[i], threshold, true[i]), "wrong")
                  for i in wrong]
        shown = {(file_key(paths[i]), "0", "") for i in wrong}
    rows, _ = counted_rows(read_rows(config.output))
    _, near = report.gallery_indices(None, [float(r["p_male"]) for r in rows], threshold)
    chosen = []
    for i in near:  # no face twice: the sample is drawn from the collection, copies happen
        r = rows[i]
        key = (file_key(r["path"]), r.get("face", "0"), r.get("time") or "")
        if key not in shown:
            shown.add(key)
            chosen.append(r)
    loose = [r["path"] for r in chosen if "face" not in r]
    reader = decoding.ImageReader(image_size, geometry,
                              decoding.main_faces(loose, geometry, config.cache_dir, 0, config.backend))
    for r in chosen:
        image = face_as_scored(r, config, image_size, geometry, detector, reader)
        if image is not None:
            extra = (f" @{float(r['time']):.1f}s" if r.get("time") else "") + (
                f" #{r['face']}" if "face" in r else "")
            tiles.append((report.tile_image(image),
                          report.caption(r["path"], float(r["p_male"]), threshold, extra=extra),
                          "unsure"))
    return tiles


def file_key(path):
    """The content of a file, as a digest (its path when it cannot be read): the same photo
    under two names is one photo."""
    from facegender.faces import finder as faces
    try:
        return faces.content_key(faces.read_file(path))
    except OSError:
        return path


def face_as_scored(row, config, image_size, geometry, detector, reader):
    """The model's input for one CSV row, cut again; None when it cannot be (changed since)."""
    from facegender.labelling import inputs, photo_faces
    if "face" not in row:
        image, ok = reader(row["path"])
        return image if ok else None
    try:
        if row.get("time"):
            from facegender.labelling import video
            from PIL import Image
            _, frame = next(video.sampled_frames(row["path"], config.every, float(row["time"])))
            photo = Image.fromarray(frame)
            photo.thumbnail((inputs.MAX_PHOTO_SIDE,) * 2, Image.BILINEAR)
            scale = frame.shape[1] / photo.size[0]
        else:
            photo, scale = inputs.load_photo(row["path"])
        crops = photo_faces.face_crops(photo, scale, image_size, config.min_face_size,
                                       detector, geometry)
        return crops[int(row["face"])][1]
    except (StopIteration, IndexError, OSError, ValueError, DataError):
        return None
