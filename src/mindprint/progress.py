"""Progress a person can see: a live bar on a terminal, a ``tqdm`` bar in a notebook, plain
periodic lines in logs/CI. :func:`progress_bar` picks one; all three have ``update``, ``note``
and ``close``.

A notebook's output is neither a terminal nor a log: rich's live display needs ipywidgets there
and shows nothing without it, while ``tqdm.auto`` draws a widget bar when ipywidgets is installed
and an in-place text bar otherwise (tqdm is already installed with transformers, and listed in
this package's dependencies)."""

from __future__ import annotations

import sys
import time


def fmt_secs(s: float) -> str:
    s = max(0, int(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def _info(loss: float | None, tokens_per_s: float | None, extra: str) -> str:
    info = []
    if loss is not None:
        info.append(f"loss {loss:.4f}")
    if tokens_per_s is not None:
        info.append(f"{tokens_per_s:,.0f} tok/s")
    if extra:
        info.append(extra)
    return "  ".join(info)


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (Jupyter, JupyterLab, Colab, VS Code notebooks):
    IPython is loaded, with a kernel, and has a running shell."""
    ipython = sys.modules.get("IPython")
    return "ipykernel" in sys.modules and ipython is not None and ipython.get_ipython() is not None


def progress_bar(total: int, start: int = 0, *, desc: str = "train", stream=None):
    """The progress display for here: :class:`NotebookProgress` in a notebook (unless a
    ``stream`` is given), else :class:`TrainProgress` (a live bar on a terminal, lines in a log)."""
    if stream is None and in_notebook():
        return NotebookProgress(total, start, desc=desc)
    return TrainProgress(total, start, desc=desc, stream=stream)


class NotebookProgress:
    """A ``tqdm.auto`` bar: step/total, loss and tokens/s, ETA; notes print above it."""

    def __init__(self, total: int, start: int = 0, *, desc: str = "train", stream=None):
        from tqdm.auto import tqdm      # only where a bar is drawn

        self._bar = tqdm(total=total, initial=start, desc=desc, unit="step", file=stream)
        self._step = start

    def update(self, step: int, loss: float | None = None, tokens_per_s: float | None = None,
               extra: str = "") -> None:
        self._bar.set_postfix_str(_info(loss, tokens_per_s, extra), refresh=False)
        self._bar.update(step - self._step)
        self._step = step

    def note(self, text: str) -> None:
        self._bar.write(text, file=self._bar.fp)

    def close(self) -> None:
        self._bar.close()


class TrainProgress:
    """Shows step/total, loss, tokens/s and ETA; ``update`` is cheap, call it every step."""

    def __init__(self, total: int, start: int = 0, *, desc: str = "train", stream=None):
        self.total, self.start, self.desc = total, start, desc
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.live = self.stream.isatty()
        self._bar = None
        self._last_print = 0.0
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TextColumn("ETA"), TimeRemainingColumn(),
                                 console=Console(file=self.stream), transient=False)
            self._task = self._bar.add_task(desc, total=total, completed=start, info="")
            self._bar.start()

    def eta(self, step: int) -> float:
        done = step - self.start
        if done <= 0:
            return float("nan")
        return (time.monotonic() - self.t0) / done * (self.total - step)

    def update(self, step: int, loss: float | None = None, tokens_per_s: float | None = None,
               extra: str = "") -> None:
        text = _info(loss, tokens_per_s, extra)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=text)
            return
        now = time.monotonic()
        # in a log: a line every ~10 s, plus the first and the last step
        if step == self.total or step == self.start + 1 or now - self._last_print >= 10:
            self._last_print = now
            eta = self.eta(step)
            eta_s = fmt_secs(eta) if eta == eta else "?"
            print(f"[{self.desc}] step {step}/{self.total}  {text}  ETA {eta_s}",
                  file=self.stream, flush=True)

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
