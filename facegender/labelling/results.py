"""The end of a labelling run: the CSV written, --annotate's boxed copies of the photos and
their contact sheet drawn from its rows, and the summary of what was found. Every engine
(predict.py's plain run, ray_engine.py) ends here, then writes its videos' tracks
(video.finish_tracks)."""

import os
import sys

from PIL import Image

from facegender.core.common import CLASS_NAMES, DataError
from facegender.core.outputs import write_csv
from facegender.drawing import annotate
from facegender.labelling.csv_rows import counted, csv_header
from facegender.labelling.inputs import load_photo
from facegender.labelling.photo_faces import crop_box


def write_annotations(config, files, rows, skipped, threshold):
    """A boxed, labelled copy of each readable photo in config.annotate, and the contact sheet of
    every face, drawn from the CSV's rows, so that every engine gets the same pictures.

    Each photo is decoded again as for detection (upright, at most MAX_PHOTO_SIDE), and a
    face's box is the CSV's scaled to it (the whole image without --detect_faces). Returns
    (photos written, the contact sheet's path).
    """
    header = csv_header(config)
    col = {name: k for k, name in enumerate(header)}
    faces = {}
    for row in counted(rows, header):  # an image without a face gets no box
        faces.setdefault(row[0], []).append(row)
    photos = [path for path in files if path not in skipped]
    sheet = os.path.join(config.annotate, "contact_sheet.jpg")
    names = annotate.copy_names(photos, config.annotate, avoid=[sheet])
    tiles, captions, found, written = [], [], 0, 0
    for path in photos:
        try:
            photo, scale = load_photo(path)
        except Exception as err:  # it decoded a moment ago: changed since; the CSV stands
            print(f"warning: could not annotate {path} ({err})", file=sys.stderr)
            continue
        drawn = []
        for row in faces.get(path, []):
            p_male, label = float(row[col["p_male"]]), row[col["label"]]
            box = ([round(int(row[col[k]]) / scale) for k in "xywh"] if config.detect_faces
                   else [0, 0, *photo.size])
            drawn.append((*box, p_male, label))
            found += 1
            if len(tiles) < annotate.SHEET_MAX_FACES:
                crop = photo.crop(crop_box(box, *photo.size)) if config.detect_faces else photo
                tiles.append(crop.resize((annotate.SHEET_TILE,) * 2, Image.BILINEAR))
                captions.append(annotate.sheet_caption(
                    path, row[col["face"]] if config.detect_faces else None, label, p_male,
                    threshold))
        annotate.save(annotate.draw_faces(photo, drawn, threshold), names[path], quality=92)
        written += 1
    annotate.save(annotate.contact_sheet(tiles, captions, found - len(tiles)), sheet,
                  quality=92)
    return written, sheet


def finish(config, photos, videos, rows, skipped, no_face, threshold, source):
    """Write the CSV (and --annotate's pictures of photos) and print the summary (every engine
    ends here, then writes its videos' tracks: video.finish_tracks); returns the summary dict.
    Rows of images in which no face was found are written and named, and left out of the
    counts."""
    files = photos + videos
    if len(skipped) == len(files):
        raise DataError(f"{', '.join(config.paths)}: none of the "
                        f"{'files' if videos else 'images'} could be read")
    header = csv_header(config)
    write_csv(config.output, header, rows)
    annotated = (write_annotations(config, photos, rows, skipped, threshold)
                 if config.annotate and photos else None)

    faces = counted(rows, header)
    labels = [row[header.index("label")] for row in faces]
    counts = {name: labels.count(name) for name in CLASS_NAMES}
    searched = "face_found" in header
    unit = "faces" if searched else "images"
    print(f"\n{len(faces)} {unit}: " + ", ".join(f"{n} {name}" for name, n in counts.items())
          if faces else f"\nno faces found: nothing to count among {len(files)} file(s)")
    if config.detect_faces:
        faceless = set(no_face)
        kinds = []
        for name, paths in (("photos", photos), ("videos", videos)):
            if paths or (name == "photos" and not videos):
                readable = [p for p in paths if p not in skipped]
                found = sum(p not in faceless for p in readable)
                kinds.append(f"{found} of {len(readable)} readable {name}")
        print(f"{' and '.join(kinds)} had a face (smallest side {config.min_face_size} px)")
    video_set = set(videos)
    whole = [path for path in no_face if path not in video_set]
    if whole:
        print(f"{len(whole)} image(s) without a face found: scored whole, not counted "
              "(face_found false in the CSV):")
        for path in whole:
            print(f"  {path}")
    if faceless_videos := [path for path in no_face if path in video_set]:
        print(f"{len(faceless_videos)} video(s) without a face found in a sampled frame:")
        for path in faceless_videos:
            print(f"  {path}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable {'file' if videos else 'image'}(s):")
        for path, why in skipped.items():
            print(f"  {path}: {why}")
    print(f"wrote {os.path.abspath(config.output)}")
    if annotated:
        print(f"annotated {annotated[0]} photo(s) in {os.path.abspath(config.annotate)}; faces "
              f"within {annotate.LOW_CONFIDENCE_BAND} of the threshold are dashed, with a '?'; "
              f"contact sheet: {annotated[1]}")
    return {"rows": len(rows), "faces": len(faces), "counts": counts, "threshold": threshold,
            "source": source, "skipped": skipped, "no_face": no_face}
