"""Progress a person can see: a live bar on a terminal, plain periodic lines in logs/CI."""

from __future__ import annotations

import sys
import time


def fmt_secs(s: float) -> str:
    s = max(0, int(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


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
        info = []
        if loss is not None:
            info.append(f"loss {loss:.4f}")
        if tokens_per_s is not None:
            info.append(f"{tokens_per_s:,.0f} tok/s")
        if extra:
            info.append(extra)
        text = "  ".join(info)
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
