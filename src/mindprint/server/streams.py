"""One request to the chat engine (:mod:`.engine`) and what is streamed back to it: the answer
text as it grows, with stop strings and incomplete characters held back, and the final ``done``.

Invariant: the text sent (``delta`` events, concatenated) never contains a stop string or a
partial UTF-8 character, has no leading white space, and is a prefix of the final answer.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field


@dataclass
class Settings:
    """How to answer: the same knobs for the API and the terminal chat."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None          # None: DEFAULT_MAX_TOKENS (or what the context allows)
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Request:
    messages: list[dict]
    adapter: str | None                     # adapter directory, None for the base model
    settings: Settings
    events: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    def next_event(self, timeout: float | None = None) -> tuple:
        return self.events.get(timeout=timeout)

    def stream(self):
        """Events until ``done`` or ``error`` (inclusive); cancels the request if abandoned."""
        try:
            while True:
                ev = self.events.get()
                yield ev
                if ev[0] in ("done", "error"):
                    return
        finally:
            self.cancel()

    def text(self) -> tuple[str, str, dict]:
        """The whole answer: (text, finish_reason, usage); raises the engine's error."""
        parts = []
        for ev in self.stream():
            if ev[0] == "delta":
                parts.append(ev[1])
            elif ev[0] == "error":
                raise ev[1]
            else:
                return "".join(parts), ev[1], ev[2]
        raise RuntimeError("the engine ended the request without an answer")


@dataclass
class Job:
    """A request ready to decode: its prompt ids, token budget, seed and output streamer."""

    req: Request
    ids: list[int]
    max_new: int
    seed: int
    streamer: TextStream

    def finish(self, reason: str | None) -> None:
        """Flush the held-back text and send ``done``: ``stop`` when the answer ended at end of
        turn (``reason``) or at a stop string, else ``length``."""
        self.streamer.flush()
        finish = "stop" if reason == "stop" or self.streamer.stopped else "length"
        n_out, n_prompt = self.streamer.n_tokens, len(self.ids)
        self.req.events.put(("done", finish, {"prompt_tokens": n_prompt,
                                              "completion_tokens": n_out,
                                              "total_tokens": n_prompt + n_out}))


class TextStream:
    """Receives generated token ids from ``generate`` (the first call is the prompt, skipped),
    decodes the answer so far and puts the new text on the request's queue. Text that could be
    the start of a stop string, or an incomplete UTF-8 character, is held back; a complete stop
    string ends the answer before it (``stopped``)."""

    def __init__(self, tok, req: Request, stops: list[str]):
        self.tok, self.req, self.stops = tok, req, [s for s in stops if s]
        self.ids: list[int] = []
        self.sent = 0                 # characters of the decoded answer already sent
        self.stopped = False
        self._prompt_seen = False
        self._lead = 0

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    def saw_eos(self, eos: list[int]) -> bool:
        return bool(self.ids) and self.ids[-1] in eos

    def put(self, value) -> None:
        """``generate``'s streamer hook: the prompt first (skipped), then new tokens."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if self.stopped:
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        self._emit(final=False)

    def add(self, token: int) -> None:
        """One new token (the fast decoder's hook)."""
        if not self.stopped:
            self.ids.append(int(token))
            self._emit(final=False)

    def end(self) -> None:
        pass

    def flush(self) -> None:
        if not self.stopped:
            self._emit(final=True)

    def _emit(self, final: bool) -> None:
        full = self.tok.decode(self.ids, skip_special_tokens=True)
        if not self.sent:            # leading white space (a newline after the role marker) goes
            self._lead = len(full) - len(full.lstrip())
        text = full[self._lead:]
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            text, self.stopped = text[:cut], True
        elif not final:
            if text.endswith("\ufffd"):          # a character still being spelled out in bytes
                text = text[:-1]
            hold = max((k for s in self.stops for k in range(1, len(s))
                        if text.endswith(s[:k])), default=0)
            text = text[:len(text) - hold]
            text = text.rstrip() if text.strip() else ""   # trailing space may end the answer
        else:
            text = text.rstrip()
        if len(text) > self.sent:
            self.req.events.put(("delta", text[self.sent:]))
            self.sent = len(text)


class StopOnCancel:
    """Stops ``generate`` when the request is cancelled or a stop string was seen."""

    def __init__(self, req: Request, streamer: TextStream):
        self.req, self.streamer = req, streamer

    def __call__(self, input_ids, scores, **kw):
        import torch

        done = self.req.cancelled.is_set() or self.streamer.stopped
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
