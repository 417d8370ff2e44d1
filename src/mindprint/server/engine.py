"""The chat engine behind ``/v1/chat/completions`` and ``mindprint chat``: one base model in
memory, adapters loaded on demand, one generation at a time.

Model. The base (``--model``, default: the first ``--adapter``'s base, else the bundled model) is
loaded on the first request, not at start-up (a server that is only used for training never pays
for it). Adapters are attached with PEFT's multi-adapter API: the first one wraps the base
(``PeftModel.from_pretrained``), later ones are added with ``load_adapter`` and chosen with
``set_adapter``; ``base`` runs with ``disable_adapter()``. At most ``max_adapters`` stay loaded
(least recently used is dropped with ``delete_adapter``); the base weights are never reloaded.
An adapter trained on another base model is refused with the two names.

Queue. Requests go into one FIFO queue served by one worker thread, so generations never
interleave (adapter switches happen between requests only): a second request waits until the
first is finished. Batching concurrent streams is not done. A consumer that goes away (a closed
stream) cancels its request: the worker stops it at the next token.

Decoding is transformers' ``generate`` (KV-cached; greedy at temperature 0, else nucleus
sampling) with a streamer that hands every new token to the request's event queue; ``stop``
strings are matched in the decoded text (a partial match at the end is held back while
streaming, so no stop text ever reaches the client). Chosen over the GRPO sampler of
:mod:`mindprint.backends.torch.sampling` because that one returns whole completions and merges
the adapter per call; streaming one token at a time needs a per-token hook.

Events on a request's queue: ``("delta", text)``, then ``("done", finish_reason, usage)`` with
finish_reason ``stop`` (end of turn or a stop string) or ``length``, or ``("error", exc)``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DEFAULT_MODEL
from ..errors import MindprintError, ModelError

DEFAULT_MAX_TOKENS = 256
MAX_ADAPTERS = 4


class RequestError(MindprintError):
    """A request the engine cannot answer as asked (too long, unknown adapter base, ...): the
    client's mistake, answered with 400 and this message; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


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


class ChatEngine:
    """One base model, an LRU of adapters, one worker thread (see the module docstring)."""

    def __init__(self, model: str | None = None, *, device: str = "auto",
                 max_adapters: int = MAX_ADAPTERS, default_adapter: str | None = None):
        self.model_spec = model
        self.device = device
        self.max_adapters = max(1, int(max_adapters))
        self.default_adapter = default_adapter      # names the base when no --model is given
        self._model = self._tok = self._ref = None
        self._loaded: OrderedDict[str, str] = OrderedDict()   # adapter dir -> PEFT adapter name
        self._n = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # -- public --------------------------------------------------------------------------------
    def submit(self, messages: list[dict], adapter: str | None, settings: Settings) -> Request:
        req = Request(messages=messages, adapter=str(adapter) if adapter else None,
                      settings=settings)
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="mindprint-chat",
                                                daemon=True)
                self._thread.start()
        self._queue.put(req)
        return req

    def waiting(self) -> int:
        return self._queue.qsize()

    def loaded_adapters(self) -> list[str]:
        return list(self._loaded)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    # -- the worker ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            req = self._queue.get()
            if req is None:
                return
            if req.cancelled.is_set():          # its reader left while it waited
                req.events.put(("error", RequestError("cancelled before it started")))
                continue
            try:
                self._answer(req)
            except MindprintError as e:
                req.events.put(("error", e))
            except Exception as e:   # noqa: BLE001 - the worker must outlive one bad request
                req.events.put(("error", RuntimeError(f"{type(e).__name__}: {e}")))

    def _load_base(self) -> None:
        from ..backends.torch.adapters import base_model_of
        from ..backends.torch.load import load_base
        from ..backends.torch.process import configure_process
        from ..models import resolve

        spec, _ = base_model_of(self.default_adapter, self.model_spec, default=DEFAULT_MODEL)
        configure_process(device=self.device)
        self._ref = resolve(spec)
        self._model, self._tok = load_base(self._ref, device=self.device)
        self._model.eval()

    def _select(self, adapter: str | None):
        """The model with ``adapter`` active (None: the base), loading it if needed."""
        if adapter is None:
            return None
        if adapter in self._loaded:
            self._loaded.move_to_end(adapter)
            name = self._loaded[adapter]
        else:
            name = self._attach(adapter)
        self._model.set_adapter(name)
        return name

    def _attach(self, adapter: str) -> str:
        from ..backends.torch.adapters import attach_adapter, read_adapter_meta
        from ..models import resolve

        meta = read_adapter_meta(Path(adapter))
        base, base_path = meta.get("base_model"), meta.get("base_model_path")
        if base or base_path:
            try:          # the path the run loaded (written by training), else the spec resolved
                path = base_path or resolve(str(base)).path
                same = Path(path).resolve() == Path(self._ref.path).resolve()
            except ModelError:
                same = False
            if not same:
                raise RequestError(f"adapter {adapter} was trained on {base or base_path}; this "
                                   f"server holds {self._ref.spec} (start it with --model "
                                   f"{base or base_path} to talk to this adapter)", "model")
        self._n += 1
        name = f"a{self._n}"
        if not self._loaded:
            self._model = attach_adapter(self._model, adapter, self._ref.spec, adapter_name=name)
        else:
            try:
                self._model.load_adapter(adapter, adapter_name=name)
            except (RuntimeError, ValueError, KeyError, OSError) as e:
                detail = str(e).splitlines()[0] if str(e) else repr(e)
                raise ModelError(f"{adapter}: the adapter does not fit {self._ref.spec}: "
                                 f"{detail[:300]}") from None
        self._model.eval()
        self._loaded[adapter] = name
        while len(self._loaded) > self.max_adapters:
            _, old = self._loaded.popitem(last=False)
            self._model.delete_adapter(old)
        return name

    def _answer(self, req: Request) -> None:
        import torch

        from ..data.render import end_of_turn_ids, render_text

        if self._model is None:
            self._load_base()
        tok, s = self._tok, req.settings
        name = self._select(req.adapter)
        try:
            text = render_text(tok, req.messages, add_generation_prompt=True)
        except Exception as e:   # noqa: BLE001 - a template's own error, about these messages
            raise RequestError(f"messages: the model's chat template refuses them: {e}",
                               "messages") from None
        ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        n_prompt = ids.shape[1]
        limit = getattr(self._model.config, "max_position_embeddings", None) or 1 << 30
        room = limit - n_prompt
        if room < 1:
            raise RequestError(f"messages: the prompt is {n_prompt} tokens; this model reads at "
                               f"most {limit}", "messages")
        max_new = min(s.max_tokens or DEFAULT_MAX_TOKENS, room)
        dev = next(self._model.parameters()).device
        eos = end_of_turn_ids(tok)
        streamer = _Streamer(tok, req, s.stop)
        kw = dict(max_new_tokens=max_new, eos_token_id=eos, pad_token_id=tok.pad_token_id,
                  streamer=streamer, stopping_criteria=[_Stop(req, streamer)])
        if s.temperature > 0:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        seed = s.seed if s.seed is not None else int(time.time_ns() % 2**31)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            if name is None and self._loaded:
                with self._model.disable_adapter():
                    self._model.generate(input_ids=ids.to(dev), **kw)
            else:
                self._model.generate(input_ids=ids.to(dev), **kw)
        streamer.flush()
        finish = "stop" if streamer.stopped or streamer.saw_eos(eos) else "length"
        n_out = streamer.n_tokens
        req.events.put(("done", finish, {"prompt_tokens": n_prompt, "completion_tokens": n_out,
                                         "total_tokens": n_prompt + n_out}))


class _Streamer:
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
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if self.stopped:
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
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


class _Stop:
    """Stops ``generate`` when the request is cancelled or a stop string was seen."""

    def __init__(self, req: Request, streamer: _Streamer):
        self.req, self.streamer = req, streamer

    def __call__(self, input_ids, scores, **kw):
        import torch

        done = self.req.cancelled.is_set() or self.streamer.stopped
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
