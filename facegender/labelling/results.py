"""The end of a labelling run: the CSV written, --annotate's boxed copies of the photos and
their contact sheet drawn from its rows, and what was found, returned as a LabelResult that
result_text puts in words (predict.py prints it). Every engine (label.py's plain run,
ray_engine.py) ends here, in write_run, which writes the videos' tracks too."""

import dataclasses
import logging
import os

from PIL import Image

from facegender.core.common import CLASS_NAMES, DataError
from facegender.core.outputs import write_csv
from facegender.drawing import annotate
from facegender.labelling import video
from facegender.labelling.csv_rows import counted, csv_header
from facegender.labelling.inputs import load_photo
from facegender.labelling.photo_faces import crop_box

log = logging.getLogger(__name__)


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
            log.warning(f"warning: could not annotate {path} ({err})")
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


@dataclasses.dataclass(frozen=True)
class LabelResult:
    """What a labelling run wrote and found (write_results; each engine adds its part: the
    videos' tracks, Ray's rows per node, the audit, the report); `result_text` says it in
    words, as predict.py prints it."""
    csv: str  # the CSV written (absolute path)
    rows: int  # its rows: faces, and the images in which none was found
    unit: str  # what is counted: "faces" when the images are searched for faces, else "images"
    counts: dict  # label -> counted rows with it (images without a face found left out)
    photos: int  # the inputs: photo files and video files
    videos: int
    threshold: float
    source: str  # where the threshold comes from
    skipped: dict  # unreadable file -> why
    no_face_images: tuple  # images in which no face was found (scored whole, not counted)
    no_face_videos: tuple  # videos with no face in any sampled frame
    # With --detect_faces: (kind, with a face, readable) for photos (and videos), and the
    # smallest face side looked for.
    had_a_face: tuple = ()
    min_face_size: int | None = None
    annotated: int | None = None  # --annotate: photos written into annotate_folder
    annotate_folder: str | None = None
    contact_sheet: str | None = None
    tracks: object = None  # video.Tracks, when there are videos
    per_node: dict | None = None  # --engine ray: rows scored on each node
    seconds: float | None = None  # --engine ray: the job's time
    audit: dict | None = None  # audit.summarize's summary
    report: str | None = None  # --report's page

    @property
    def faces(self):
        """The rows counted: faces (or images, when they are not searched for faces)."""
        return sum(self.counts.values())


def write_results(config, photos, videos, rows, skipped, no_face, threshold, source):
    """Write the CSV (and --annotate's pictures of photos), and return what was found as a
    LabelResult (every engine ends here, through write_run).
    Rows of images in which no face was found are written and named, and left out of the
    counts."""
    files = photos + videos
    if len(skipped) == len(files):
        raise DataError(f"{', '.join(config.paths)}: none of the "
                        f"{'files' if videos else 'images'} could be read")
    header = csv_header(config)
    write_csv(config.output, header, rows)
    annotated = (write_annotations(config, photos, rows, skipped, threshold)
                 if config.annotate and photos else (None, None))
    labels = [row[header.index("label")] for row in counted(rows, header)]
    had_a_face = []
    if config.detect_faces:
        faceless = set(no_face)
        for name, paths in (("photos", photos), ("videos", videos)):
            if paths or (name == "photos" and not videos):
                readable = [p for p in paths if p not in skipped]
                had_a_face.append((name, sum(p not in faceless for p in readable),
                                   len(readable)))
    video_set = set(videos)
    return LabelResult(
        csv=os.path.abspath(config.output), rows=len(rows),
        unit="faces" if "face_found" in header else "images",
        counts={name: labels.count(name) for name in CLASS_NAMES},
        photos=len(photos), videos=len(videos), threshold=threshold, source=source,
        skipped=dict(skipped),
        no_face_images=tuple(p for p in no_face if p not in video_set),
        no_face_videos=tuple(p for p in no_face if p in video_set),
        had_a_face=tuple(had_a_face),
        min_face_size=config.min_face_size if config.detect_faces else None,
        annotated=annotated[0], contact_sheet=annotated[1],
        annotate_folder=os.path.abspath(config.annotate) if annotated[0] is not None else None)


def write_run(config, photos, videos, rows, skipped, no_face, threshold, source):
    """The end of a run, on either engine: write_results, then the videos' tracks beside the
    CSV (and --annotate's frames), and the videos' progress records removed; returns the
    LabelResult, its tracks included."""
    result = write_results(config, photos, videos, rows, skipped, no_face, threshold, source)
    if videos:
        result = dataclasses.replace(result, tracks=video.finish_tracks(
            config, csv_header(config), rows, videos, skipped, threshold))
    video.remove_progress(config.output)
    return result


def result_text(result):
    """A LabelResult in words: the counts by label, how many photos (and videos) had a face,
    the images and videos without one, the skipped files and why, and the files written.
    Starts with an empty line, to stand apart from the progress above it."""
    if result.faces:
        lines = [f"\n{result.faces} {result.unit}: "
                 + ", ".join(f"{n} {name}" for name, n in result.counts.items())]
    else:
        lines = [f"\nno faces found: nothing to count among {result.photos + result.videos} "
                 "file(s)"]
    if result.had_a_face:
        lines.append(" and ".join(f"{found} of {readable} readable {kind}"
                                  for kind, found, readable in result.had_a_face)
                     + f" had a face (smallest side {result.min_face_size} px)")
    if result.no_face_images:
        lines.append(f"{len(result.no_face_images)} image(s) without a face found: scored "
                     "whole, not counted (face_found false in the CSV):")
        lines += [f"  {path}" for path in result.no_face_images]
    if result.no_face_videos:
        lines.append(f"{len(result.no_face_videos)} video(s) without a face found in a "
                     "sampled frame:")
        lines += [f"  {path}" for path in result.no_face_videos]
    if result.skipped:
        lines.append(f"skipped {len(result.skipped)} unreadable "
                     f"{'file' if result.videos else 'image'}(s):")
        lines += [f"  {path}: {why}" for path, why in result.skipped.items()]
    lines.append(f"wrote {result.csv}")
    if result.annotated is not None:
        lines.append(f"annotated {result.annotated} photo(s) in {result.annotate_folder}; "
                     f"faces within {annotate.LOW_CONFIDENCE_BAND} of the threshold are dashed, "
                     f"with a '?'; contact sheet: {result.contact_sheet}")
    return "\n".join(lines)
