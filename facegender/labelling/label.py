"""Labelling a collection, end to end, from a LabelConfig: what `python predict.py` runs.

`label` runs on this machine: the files listed, the error rates chosen, the model and face
finder loaded (a bad model or finder stops the run before any work), photos and videos scored
into rows, then the CSV, the videos' tracks, the audit's summary and --report's page written.
`label_on_ray` is the same work as a resumable Ray job (ray_engine), the audit and the page
made on the driver. Both return a results.LabelResult and print nothing; the command line
(facegender.cli.predict) prints its texts.
"""

import dataclasses
import logging
import os

from facegender.core.common import DataError, MissingDependency
from facegender.labelling import audit, gallery, inputs, photo_faces, photos, results
from facegender.labelling import video
from facegender.model import sidecar
from facegender.runtime import inference

log = logging.getLogger(__name__)


def label(config, detector=None):
    """Predict for every image and video under `config.paths`, on this machine: write the CSV
    (and the tracks, the summary, the annotated copies, the report the config asks for) and
    return the results.LabelResult, its audit and report included. `detector`: a face finder
    to use instead of the config's (tests)."""
    files, videos = inputs.collect_inputs(config.paths)
    config = check_videos(config, files, videos)
    inference.check_backend(config.backend, config.precision)
    threshold, source = sidecar.decision_threshold(config.model_path, config.threshold)
    geometry = sidecar.face_geometry(config.model_path)
    config = dataclasses.replace(config, searched=photos.searches_faces(config, geometry))
    runner, size = inference.load_runner(config.model_path, config.backend, config.precision,
                                         config.cache_dir, threshold, config.tta, not config.unsafe)
    if config.detect_faces:  # a broken detector stops the run here, before any work
        detector = detector or photo_faces.load_face_detector(config.cache_dir, config.backend)
    # Which error rates correct the count: chosen (and an unusable sample refused) first.
    rates, note = audit.choose_rates(config, threshold, lambda folder: audit.sample_rates(
        folder, runner, size, geometry, threshold, config))
    what = photos.what_is_predicted(config, files, videos, geometry)
    log.info(f"predicting {what} at {size}x{size} on {runner.name}, threshold {threshold:.2f} "
             f"({source}); face crop: {geometry or 'as given'}")

    rows, skipped, no_face = [], {}, []
    if files and config.detect_faces:
        rows, skipped, no_face = photos.predict_faces(runner, size, files, config, threshold,
                                                      detector, geometry)
    elif files:
        rows, skipped, no_face = photos.predict_crops(runner, size, files, config, threshold,
                                                      geometry)
    if videos:
        rows = [(row[0], "", *row[1:], "") for row in rows]  # a photo: no time, no track
        found, faceless = predict_videos(runner, size, videos, config, threshold, detector,
                                         geometry, skipped)
        rows += found
        no_face += faceless
    result = results.write_run(config, files, videos, rows, skipped, no_face, threshold, source)
    return audit_and_report(config, result, rates, note, threshold, size, geometry, detector)


def check_videos(config, files, videos):
    """Videos are searched for faces frame by frame, one row per face: they imply
    --detect_faces, and photos beside them are cut into every face found too, for one CSV's
    columns (said in a note). Returns the config to run with (`videos` and `detect_faces` set
    when there are videos)."""
    if not videos:
        return config
    if files and not config.detect_faces:
        log.info(f"note: {len(videos)} video(s) among the photos: every photo is searched for "
                 "faces too, one row per face (as --detect_faces)")
    return dataclasses.replace(config, detect_faces=True, videos=True)


def predict_videos(runner, size, videos, config, threshold, detector, geometry, skipped):
    """Rows of every face in `videos` and the videos in which none was found. A video that
    cannot be read (damaged, truncated, not a video) is named, added to `skipped` and passed
    over, as an unreadable photo is, and the others go on."""
    rows, no_face = [], []
    for path in videos:
        try:
            found = video.predict_video(runner, size, path, config, threshold, detector, geometry)
        except DataError as err:
            why = str(err).removeprefix(f"{path}: ")  # named once, where it is listed
            skipped[path] = why
            log.warning(f"warning: skipping unreadable video {path} ({why})")
            continue
        rows += found
        no_face += [] if found else [path]
    return rows, no_face


def audit_and_report(config, result, rates, note, threshold, *loaded):
    """The audit of the CSV written (audit.summarize) and --report's page; returns `result`
    with both. `loaded`: write_report's model and finder."""
    summary = audit.summarize(config, rates, note, every=config.every if result.videos else None,
                              threshold=threshold)
    result = dataclasses.replace(result, audit=summary)
    if config.report:
        result = dataclasses.replace(result, report=write_report(config, summary, rates,
                                                                 threshold, *loaded))
    return result


def write_report(config, summary, rates, threshold, size=None, geometry=None, detector=None):
    """--report: the audit's page (of audit.summarize's `summary`), with the faces nearest the
    threshold (and the sample's mistakes) cut again as they were scored; what is not given is
    loaded here (Ray's driver). Returns the page's path."""
    from facegender.drawing import report
    if size is None:
        size = inference.load_runner(config.model_path, config.backend, config.precision,
                                     config.cache_dir, threshold, config.tta, not config.unsafe)[1]
        geometry = sidecar.face_geometry(config.model_path)
        detector = (photo_faces.load_face_detector(config.cache_dir, config.backend)
                    if config.detect_faces else None)
    tiles = gallery.faces_to_show(config, rates, threshold, size, geometry, detector)
    strips = (video.timelines(audit.read_rows(config.output), config.every)
              if "video" in summary else None)
    counted = audit.denominator_rows(summary["video"]) if "video" in summary else ()
    return report.write(config.report, report.audit_page(summary, tiles, strips, counted))


def label_on_ray(config):
    """`label`'s work as a Ray job (--engine ray: ray_engine.run, whose driver and actors find
    the cache root in $FACEGENDER_CACHE, passed on to every node): returns the
    results.LabelResult with the rows per node, or ray_engine.Stopped."""
    try:
        import ray  # noqa: F401
        from facegender.labelling import ray_engine
    except ImportError as err:
        raise MissingDependency(f"--engine ray needs Ray ({err}); pip install ray"
                                ) from None
    os.environ["FACEGENDER_CACHE"] = config.cache_dir
    files, videos = inputs.collect_inputs(config.paths)
    config = check_videos(config, files, videos)
    threshold, _ = sidecar.decision_threshold(config.model_path, config.threshold)
    rates, note = audit.choose_rates(config, threshold, lambda folder: sample_on_driver(
        folder, config, threshold))
    result = ray_engine.run(config)
    if isinstance(result, ray_engine.Stopped):
        return result
    # --report: the gallery's few faces are cut again here, on the driver
    return audit_and_report(config, result, rates, note, threshold)


def sample_on_driver(folder, config, threshold):
    """--audit_sample with --engine ray: the sample is small, so it is scored here."""
    runner, size = inference.load_runner(config.model_path, config.backend, config.precision,
                                         config.cache_dir, threshold, config.tta, not config.unsafe)
    return audit.sample_rates(folder, runner, size, sidecar.face_geometry(config.model_path),
                              threshold, config)
