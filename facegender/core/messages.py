"""What the package says while it works, and where it goes.

Library code never prints. It returns its results, which the front doors (facegender.cli) print,
and says what it is doing through the standard `logging` module, one logger per module
(`logging.getLogger(__name__)`): what it is doing and notes at INFO, warnings at WARNING. A
program that imports the package hears the warnings only, through Python's own last-resort
handler, until it configures logging itself. The scripts call `show_messages()` once, which
shows each message as the bare line it is: INFO on stdout beside the results, WARNING and up on
stderr.
"""

import contextlib
import logging
import sys

PACKAGE_LOGGER = "facegender"


class _TerminalHandler(logging.Handler):
    """Each record's message as one line on stdout (below WARNING) or stderr. The streams are
    looked up at each record, not kept, so a redirected sys.stdout (a test's capture, a
    wrapper's pipe) gets the lines that follow."""

    def emit(self, record):
        try:
            stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except BrokenPipeError:
            raise  # the reader stopped reading: the script ends, quietly (cli.options.exit_code)
        except Exception:
            self.handleError(record)


def show_messages():
    """Send the package's messages to the terminal, once per process (calling it again changes
    nothing): INFO and up, as bare lines, not passed on to the root logger."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(h, _TerminalHandler) for h in logger.handlers):
        logger.addHandler(_TerminalHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


class _Keeper(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.kept = []

    def emit(self, record):
        self.kept.append(record.getMessage())


@contextlib.contextmanager
def warnings_kept():
    """Keep the package's warnings of the block in a list of their messages (yielded), for
    work done in another process whose terminal nobody sees (a Ray actor): the process that
    asked for the work says them again."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    keeper = _Keeper()
    logger.addHandler(keeper)
    try:
        yield keeper.kept
    finally:
        logger.removeHandler(keeper)
