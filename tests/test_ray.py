"""predict.py --engine ray: the plain run's rows, and a killed run resumed without loss or repeats.

Two real nodes take longer: bench/bench_ray.py --two_nodes runs them.
"""

import csv
import json
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from facegender.model import network as model_lib  # noqa: E402
from facegender.cli import predict  # noqa: E402
from facegender.labelling import ray_engine, results  # noqa: E402
from facegender.core.common import DataError  # noqa: E402
from conftest import ROOT, face_like_image, tree_hashes  # noqa: E402
from test_inference import small_model  # noqa: E402
from test_predict import group_photo  # noqa: E402


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def small_model_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ray_model") / "small.h5")
    model_lib.save_model(small_model(), path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Ten face crops, a broken file and two group photos, in nested folders."""
    root = tmp_path_factory.mktemp("ray_photos")
    rng = np.random.default_rng(5)
    (root / "a" / "b").mkdir(parents=True)
    for i in range(10):
        face_like_image(i % 2, rng).save(root / ("a" if i < 5 else "a/b") / f"{i}.png")
    (root / "a" / "broken.jpg").write_bytes(b"not an image")
    group_photo(root / "group.png")
    group_photo(root / "a" / "b" / "pair.png")
    return str(root)


def test_an_unreachable_cluster_is_one_line_and_exit_2(small_model_file, photos, tmp_path,
                                                       capsys):
    if ray.is_initialized():
        pytest.skip("Ray is already running in this process")
    assert predict.main([photos, "--model_path", small_model_file, "--engine", "ray",
                         "--ray_address", "127.0.0.1:1", "--output", str(tmp_path / "p.csv"),
                         "--verbose", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no Ray cluster answers" in err
    assert not (tmp_path / "p.csv").exists()


def test_a_cluster_that_does_not_let_us_in_fails_within_the_stated_time(small_model_file,
                                                                        photos, tmp_path):
    # A port that accepts connections and never answers, as a cluster that needs a token or
    # speaks another Ray version looks: ray.init alone retries for minutes. Run as a user
    # would, in a process of its own (the attempt is abandoned, not cancelled).
    import socket
    import subprocess
    import sys
    import threading
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: [accepted.append(server.accept()) for _ in range(64)],
                     daemon=True).start()
    port = server.getsockname()[1]
    before = tree_hashes(photos)
    # The wait must end: a generous bound (ray.init alone retries for minutes), failed with a
    # message, not a measure of speed (that belongs in bench/).
    try:
        done = subprocess.run(
            [sys.executable, "predict.py", photos, "--model_path", small_model_file, "--engine",
             "ray", "--ray_address", f"127.0.0.1:{port}", "--ray_join_timeout", "3",
             "--output", str(tmp_path / "p.csv"), "--verbose", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("predict.py kept trying to join for 300 s despite --ray_join_timeout 3")
    finally:
        server.close()
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "no Ray cluster let us join within 3 s" in err[0]
    assert accepted  # it did reach the port: the refusal is the cluster's, not the network's
    assert not (tmp_path / "p.csv").exists() and tree_hashes(photos) == before


@pytest.fixture
def ray_started():
    """Ray running in this process for one test, then shut down (the test of an unreachable
    cluster needs a process without it)."""
    started = ray_engine.connect(num_cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_a_video_on_ray_is_one_task_and_gives_the_rows_of_the_plain_run(ray_started,
                                                                       small_model_file,
                                                                       tmp_path):
    # Two seconds of a still group photo beside the photo itself: the video is one shard,
    # scored by an actor with the real face finder, its rows timed as the plain run's.
    from facegender.labelling import audit
    from test_video import group_clip
    folder = tmp_path / "archive"
    folder.mkdir()
    clip = group_clip(folder / "clip.avi", folder / "group.png")
    flags = [str(folder), "--model_path", small_model_file, "--verbose", "0",
             "--detect_faces", "--every", "1"]
    plain, out = tmp_path / "plain.csv", tmp_path / "ray.csv"
    assert predict.main(flags + ["--output", str(plain)]) == 0
    # A threshold next to a face's score puts faces in the report's gallery of unsure ones.
    header, first = read_rows(plain)[:2]
    flags += ["--threshold", f"{float(first[header.index('p_male')]) + 0.01:.4f}"]
    plain_page, page = tmp_path / "plain.html", tmp_path / "audit.html"
    assert predict.main(flags + ["--output", str(plain), "--report", str(plain_page)]) == 0
    assert predict.main(flags + ["--output", str(out), "--engine", "ray", "--report",
                                 str(page)]) == 0
    rows = read_rows(out)
    assert rows == read_rows(plain) and rows[0][:2] == ["path", "time"]
    assert sorted((r[1], r[2]) for r in rows[1:] if r[0] == clip) == [
        ("0.000", "0"), ("0.000", "1"), ("1.000", "0"), ("1.000", "1")]
    assert {r[1] for r in rows[1:] if r[0] != clip} == {""}  # the photo's rows: no time
    # The still clip's two faces are two tracks, found alike by the actor and the plain run.
    assert rows[0][-1] == "track" and [r[-1] for r in rows[1:] if r[0] == clip] == [
        "0", "1", "0", "1"]
    summary = json.load(open(audit.summary_path(str(out))))
    assert sum(summary["screen_time"]["face_seconds"].values()) == 4  # 2 faces x 2 s
    assert not os.path.exists(str(out) + ".progress")  # the video's record, done with
    # The report: its gallery's faces cut again on the driver, as the plain run cuts them.
    html, plain_html = page.read_text(), plain_page.read_text()
    assert html.count("data:image/") == plain_html.count("data:image/") >= 2  # figure, faces
    assert "src=\"http" not in html


@pytest.mark.slow
def test_a_killed_run_resumed_gives_every_row_of_the_plain_run_once(ray_started,
                                                                    small_model_file, photos,
                                                                    tmp_path, capsys):
    # Faces detected and flip-averaged, so one Ray start and two actor starts (each imports
    # TensorFlow) cover the rows of every kind: crops, faces in group photos, a broken file.
    flags = [photos, "--model_path", small_model_file, "--verbose", "0", "--tta",
             "--detect_faces"]
    plain = tmp_path / "plain.csv"
    assert predict.main(flags + ["--output", str(plain)]) == 0
    plain_out = capsys.readouterr().out
    plain_rows = read_rows(plain)
    assert plain_rows[0] == ["path", "face", "x", "y", "w", "h", "face_found", "p_male", "label",
                             "threshold", "tta"]
    assert {"group.png", "pair.png"} <= {os.path.basename(r[0]) for r in plain_rows[1:]}
    assert len(plain_rows) >= 1 + 4  # the two drawn faces of each group photo

    out = tmp_path / "ray.csv"
    args = predict.parse_args(flags + ["--output", str(out), "--engine", "ray"])
    # Four shards of 4 files; the run stops, as a kill would, after saving the first one back.
    assert isinstance(ray_engine.run(args, stop_after=1, shard_files=4), ray_engine.Stopped)
    folder = ray_engine.shard_folder(str(out))
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    assert len(manifest["done"]) == 1 and manifest["shards"] == 4 and not out.exists()
    assert not [f for f in os.listdir(folder) if f.startswith(".partial")]
    summary = ray_engine.run(args, shard_files=4)  # the same command again
    # Its progress is logged (shown here: predict.main showed the package's messages), and
    # what it found is returned, not printed.
    printed, said = capsys.readouterr()
    assert "1 already done" in printed and " faces: " not in printed and "wrote" not in printed
    # The actor's warning about the broken file, said again by the driver, once.
    assert said.count("warning: skipping unreadable image") == 1 and "broken.jpg" in said
    assert read_rows(out) == plain_rows  # same columns, rows and order
    assert sum(summary.per_node.values()) == summary.rows == len(plain_rows) - 1
    # The same summary: counts, the photos without a face and the unreadable file by name.
    def tail(text):
        return text[text.rindex("\n", 0, text.index(" faces: ")):text.index("wrote")]
    text = results.result_text(summary)
    assert tail(text) == tail(plain_out)
    assert "2 of 12 readable photos had a face" in tail(text) and "broken.jpg: " in tail(text)
    assert not os.path.exists(folder)  # the CSV is whole: shards removed


@pytest.mark.slow
def test_a_lost_actor_stops_with_one_line_and_the_same_command_continues(
        ray_started, small_model_file, photos, tmp_path, monkeypatch):
    # The only actor dies (as on a lost node) at its first shard: the run names what happened
    # and what to do; the same command again gives the plain run's rows.
    died = str(tmp_path / "died")

    class DiesOnce(ray_engine.ShardScorer):
        def score(self, paths):
            if not os.path.exists(died):
                open(died, "w").close()
                os._exit(1)
            return super().score(paths)

    monkeypatch.setattr(ray_engine, "ShardScorer", DiesOnce)
    flags = [photos, "--model_path", small_model_file, "--verbose", "0"]
    plain, out = tmp_path / "plain.csv", tmp_path / "ray.csv"
    assert predict.main(flags + ["--output", str(plain)]) == 0
    args = predict.parse_args(flags + ["--output", str(out), "--engine", "ray"])
    with pytest.raises(DataError, match="every Ray actor was lost; run the same "
                                                   "command again"):
        ray_engine.run(args, shard_files=4)
    assert os.path.exists(died) and not out.exists()
    ray_engine.run(args, shard_files=4)
    assert read_rows(out) == read_rows(plain)


@pytest.mark.slow
def test_a_lost_actor_hands_its_shards_to_the_others(ray_started, small_model_file, photos,
                                                      tmp_path, monkeypatch, capsys):
    # Two actors (Ray is told of two nodes; both fit on this one): the first to take a shard
    # dies with it, and the run still ends with the plain run's rows, all from the other.
    died = str(tmp_path / "died")

    class OneDies(ray_engine.ShardScorer):
        def score(self, paths):
            try:  # whichever actor creates the file first dies, the other never does
                os.close(os.open(died, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return super().score(paths)
            os._exit(1)

    alive = [n for n in ray.nodes() if n["Alive"]]
    monkeypatch.setattr(ray_engine, "ShardScorer", OneDies)
    monkeypatch.setattr(ray, "nodes", lambda: alive * 2)
    flags = [photos, "--model_path", small_model_file, "--verbose", "0"]
    plain, out = tmp_path / "plain.csv", tmp_path / "ray.csv"
    assert predict.main(flags + ["--output", str(plain)]) == 0
    args = predict.parse_args(flags + ["--output", str(out), "--engine", "ray"])
    summary = ray_engine.run(args, shard_files=4)
    assert "on 2 Ray node(s), one actor each" in capsys.readouterr().out
    assert os.path.exists(died)
    assert read_rows(out) == read_rows(plain)
    assert sum(summary.per_node.values()) == len(read_rows(plain)) - 1


def test_shards_of_another_layout_are_not_reused(small_model_file, photos, tmp_path,
                                                 monkeypatch):
    # A run interrupted by an older version of the code left shards whose rows have other
    # columns: a resume must start over, not join them to new rows.
    config = predict.parse_args([photos, "--model_path", small_model_file, "--output",
                                 str(tmp_path / "p.csv")])
    key = ray_engine.fingerprint(["a.png"], config, 0.5, 256)
    assert ray_engine.fingerprint(["a.png"], config, 0.5, 256) == key  # stable
    monkeypatch.setattr(ray_engine, "SHARD_FORMAT", ray_engine.SHARD_FORMAT + 1)
    assert ray_engine.fingerprint(["a.png"], config, 0.5, 256) != key
    monkeypatch.undo()
    with_faces = predict.parse_args([photos, "--model_path", small_model_file, "--output",
                                     str(tmp_path / "p.csv"), "--detect_faces"])
    assert ray_engine.fingerprint(["a.png"], with_faces, 0.5, 256) != key  # other columns
