"""The package's messages: silent at INFO in a program that imports it, bare lines on the
terminal once a script shows them (INFO on stdout, warnings on stderr), never twice."""

import logging
import subprocess
import sys

from conftest import ROOT

PROGRAM = """
import logging, sys
from facegender.core import messages
log = logging.getLogger("facegender.data.x")
log.info("before: info")
log.warning("before: warning")
if sys.argv[1] == "shown":
    messages.show_messages()
    messages.show_messages()  # a second call adds no second handler
    log.info("after: info")
    log.warning("after: warning")
"""


def run(mode):
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_an_importing_program_hears_only_warnings():
    out, err = run("imported")
    assert out == ""
    assert err == "before: warning\n"  # Python's last-resort handler: the message alone


def test_a_script_shows_info_on_stdout_and_warnings_on_stderr_once():
    out, err = run("shown")
    assert out == "after: info\n"
    assert err == "before: warning\nafter: warning\n"


def test_shown_messages_follow_a_redirected_stdout(capsys):
    # (conftest puts the package's logger back after each test)
    from facegender.core import messages
    messages.show_messages()
    logging.getLogger("facegender.x").info("to the capture")
    assert capsys.readouterr().out.endswith("to the capture\n")


def test_each_test_starts_with_the_messages_unheard(capsys):
    logging.getLogger("facegender.x").info("unheard")
    assert capsys.readouterr().out == ""


def test_a_progress_bar_says_what_it_counts(capsys):
    # Two bars in a row (the audit sample's faces, then its scores) must not look alike.
    from facegender.core.progress import Progress
    progress = Progress(4, verbose=1, label="audit sample: ")
    progress.update(2)
    progress.update(2)
    assert capsys.readouterr().out.startswith("audit sample: 4/4 [")


def test_warnings_kept_in_a_worker_are_returned_not_shown(capsys):
    from facegender.core import messages
    log = logging.getLogger("facegender.labelling.x")
    with messages.warnings_kept() as kept:
        log.warning("warning: a.jpg is broken")
        log.info("not a warning")
    log.warning("after the block")
    assert kept == ["warning: a.jpg is broken"]
