"""The progress line of long loops (scoring, finding faces), in plain Python: a bar that
rewrites itself on a terminal, or a line every tenth of the way. Keras has one (Progbar), but
importing Keras costs seconds and most of a gigabyte where nothing else needs it."""

import sys
import time

BAR_WIDTH = 30
REDRAW_SECONDS = 0.1  # a terminal redraws the bar at most this often


class Progress:
    """update(n) after each n items: a bar (verbose 1), a line every tenth of the way
    (verbose 2), or nothing (verbose 0). `label` ("faces: ") starts the bar and each line, so
    that two bars in a row say which is which."""

    def __init__(self, total, verbose, unit="image", label=""):
        self.total, self.verbose, self.unit, self.label = total, verbose, unit, label
        self.seen, self.next_line, self.drawn = 0, 0, 0.0
        self.start = time.perf_counter()
        self.stream = sys.stdout

    def update(self, n):
        self.seen += n
        if self.verbose == 1 and self.total:
            self._bar()
        elif self.verbose == 2 and (self.seen >= self.next_line or self.seen == self.total):
            print(f"  {self.label}{self.seen}/{self.total} {self.unit}s", flush=True)
            self.next_line = self.seen + max(1, self.total // 10)

    def _bar(self):
        done = self.seen >= self.total
        now = time.perf_counter()
        interactive = getattr(self.stream, "isatty", lambda: False)()
        # Off a terminal the bar is one line at the end, not a line per redraw.
        if not done and (not interactive or now - self.drawn < REDRAW_SECONDS):
            return
        self.drawn = now
        filled = int(BAR_WIDTH * min(self.seen, self.total) / self.total)
        arrow = ">" if filled < BAR_WIDTH else ""
        bar = "=" * filled + arrow + "." * (BAR_WIDTH - filled - len(arrow))
        width = len(str(self.total))
        seconds = now - self.start
        rate = f"{1000 * seconds / self.seen:.0f}ms/{self.unit}" if self.seen else ""
        line = f"{self.label}{self.seen:>{width}}/{self.total} [{bar}] - {seconds:.0f}s {rate}"
        self.stream.write(("\r" if interactive else "") + line + ("\n" if done else ""))
        self.stream.flush()
