"""The chat engine behind ``/v1/chat/completions`` and ``mindprint chat``: one base model in
memory, adapters loaded on demand, concurrent requests for one adapter decoded as one batch.

Model. The base (``--model``, default: the first ``--adapter``'s base, else the bundled model) is
loaded on the first request, not at start-up (a server that is only used for training never pays
for it). Adapters are attached with PEFT's multi-adapter API: the first one wraps the base
(``PeftModel.from_pretrained``), later ones are added with ``load_adapter`` and chosen with
``set_adapter``; ``base`` runs with ``disable_adapter()``. At most ``max_adapters`` stay loaded
(least recently used is dropped with ``delete_adapter``); the base weights are never reloaded.
An adapter trained on another base model is refused with the two names.

Queue. Requests go into one FIFO queue served by one worker thread, so generations never
interleave unsafely: adapter switches happen between batches only. The worker takes the oldest
request, waits :data:`BATCH_WINDOW` for company, and decodes it together with up to
:data:`MAX_BATCH` − 1 other waiting requests *for the same adapter* (or the base); requests for
other adapters keep their place in line. A request arriving while a batch decodes waits for the
next one. A consumer that goes away (a closed stream) cancels its request: its row ends at the
next token, the others go on.

Decoding is the GRPO sampler's model (:mod:`mindprint.backends.torch.sampling`: static KV cache,
the adapter folded into the weights, bf16 where the CPU or GPU has native bf16 — ``dtype``) driven
token by token by :func:`mindprint.backends.torch.stream.decode`, which hands every new token to
the request's stream at once. The folded weights are made once per adapter switch and kept until
the next one (a switch costs one fold: ~0.2 s on the bundled model). Models the fast sampler does
not support (DoRA adapters, other architectures) fall back to transformers' ``generate`` with a
streamer, one request at a time. Either way: greedy at temperature 0, else nucleus sampling
(``top_p``) with a per-request seed; ``stop`` strings are matched in the decoded text (a partial
match at the end is held back while streaming, so no stop text ever reaches the client).

Events on a request's queue: ``("delta", text)``, then ``("done", finish_reason, usage)`` with
finish_reason ``stop`` (end of turn or a stop string) or ``length``, or ``("error", exc)``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

from ..config import DEFAULT_MODEL
from ..data.render import end_of_turn_ids, render_text
from ..errors import MindprintError, ModelError
from .streams import Job, Request, Settings, StopOnCancel, TextStream

DEFAULT_MAX_TOKENS = 256
MAX_ADAPTERS = 4
MAX_BATCH = 8            # requests decoded together
BATCH_WINDOW = 0.01      # seconds the worker waits for company before it starts a batch


class RequestError(MindprintError):
    """A request the engine cannot answer as asked (too long, unknown adapter base, ...): the
    client's mistake, answered with 400 and this message; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class ChatEngine:
    """One base model, an LRU of adapters, one worker thread (see the module docstring)."""

    def __init__(self, model: str | None = None, *, device: str = "auto",
                 max_adapters: int = MAX_ADAPTERS, default_adapter: str | None = None,
                 dtype: str = "auto", max_batch: int = MAX_BATCH):
        self.model_spec = model
        self.device = device
        self.dtype = dtype                  # the fast sampler's: auto | float32 | bfloat16
        self.max_batch = max(1, int(max_batch))
        self._fast = None                   # (adapter, FastSampler or None) of the last batch
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

    def load(self) -> None:
        """Load the base model now instead of on the first request (call before submitting)."""
        if self._model is None:
            self._load_base()

    @property
    def decode_dtype(self) -> str | None:
        """The fast decoder's weight dtype for the last batch; None before one, or when that
        model fell back to ``generate``."""
        fast = self._fast[1] if self._fast else None
        return str(fast.dtype).removeprefix("torch.") if fast is not None else None

    def waiting(self) -> int:
        return self._queue.qsize()

    def loaded_adapters(self) -> list[str]:
        return list(self._loaded)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    # -- the worker ----------------------------------------------------------------------------
    def _loop(self) -> None:
        pending: deque[Request] = deque()
        closing = False
        while pending or not closing:
            if not pending:
                req = self._queue.get()
                if req is None:
                    return
                pending.append(req)
                time.sleep(BATCH_WINDOW)            # let concurrent requests arrive
            while True:                             # everything waiting, in order
                try:
                    req = self._queue.get_nowait()
                except queue.Empty:
                    break
                if req is None:
                    closing = True
                else:
                    pending.append(req)
            batch = self._next_batch(pending)
            if batch:
                self._serve(batch)

    def _next_batch(self, pending: deque) -> list[Request]:
        """The oldest live request and up to ``max_batch - 1`` later ones for the same adapter,
        taken out of ``pending``; cancelled ones are answered on the way."""
        batch: list[Request] = []
        rest: deque[Request] = deque()
        while pending:
            req = pending.popleft()
            if req.cancelled.is_set():          # its reader left while it waited
                req.events.put(("error", RequestError("cancelled before it started")))
            elif len(batch) < self.max_batch and (not batch or req.adapter == batch[0].adapter):
                batch.append(req)
            else:
                rest.append(req)
        pending.extend(rest)
        return batch

    def _serve(self, batch: list[Request]) -> None:
        try:
            self._answer(batch)
        except MindprintError as e:
            err = e
        except Exception as e:   # noqa: BLE001 - the worker must outlive one bad request
            err = RuntimeError(f"{type(e).__name__}: {e}")
        else:
            return
        for req in batch:
            req.events.put(("error", err))

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

    def _answer(self, batch: list[Request]) -> None:
        """Answer ``batch`` (one adapter); a request the engine cannot answer as asked gets its
        own error, the others their answers. Every request gets exactly one done or error."""
        if self._model is None:
            self._load_base()
        name = self._select(batch[0].adapter)
        jobs = []
        for req in batch:
            try:
                jobs.append(self._prepare(req))
            except MindprintError as e:
                req.events.put(("error", e))
        if not jobs:
            return
        sampler = self._sampler(batch[0].adapter, name)
        if sampler is None:
            for job in jobs:
                self._generate(job, name)
        else:
            self._decode(sampler, jobs)

    def _prepare(self, req: Request) -> Job:
        tok, s = self._tok, req.settings
        try:
            text = render_text(tok, req.messages, add_generation_prompt=True)
        except Exception as e:   # noqa: BLE001 - a template's own error, about these messages
            raise RequestError(f"messages: the model's chat template refuses them: {e}",
                               "messages") from None
        ids = tok(text, add_special_tokens=False)["input_ids"]
        limit = getattr(self._model.config, "max_position_embeddings", None) or 1 << 30
        room = limit - len(ids)
        if room < 1:
            raise RequestError(f"messages: the prompt is {len(ids)} tokens; this model reads at "
                               f"most {limit}", "messages")
        seed = s.seed if s.seed is not None else int(time.time_ns() % 2**31)
        return Job(req, list(ids), min(s.max_tokens or DEFAULT_MAX_TOKENS, room), seed,
                    TextStream(tok, req, s.stop))

    def _sampler(self, adapter: str | None, name: str | None):
        """The fast sampler of ``adapter`` (folded once per switch), or None when the model or
        adapter is one it does not support."""
        from ..backends.torch.sampling import fast_sampler, sampler_dtype

        if self._fast is not None and self._fast[0] == adapter:
            return self._fast[1]
        self._fast = None                      # drop the old copy before making the new one
        dtype = sampler_dtype(self.dtype, self._model)
        if name is None and self._loaded:
            with self._model.disable_adapter():
                fast = fast_sampler(self._model, dtype)
        else:
            fast = fast_sampler(self._model, dtype)
        self._fast = (adapter, fast)
        return fast

    def _decode(self, sampler, jobs: list[Job]) -> None:
        from ..backends.torch.stream import EOS, Row, decode

        eos = end_of_turn_ids(self._tok)
        pad = self._tok.pad_token_id if self._tok.pad_token_id is not None else eos[0]

        def on_token(i: int, token: int) -> bool:
            job = jobs[i]
            job.streamer.add(token)
            return not (job.streamer.stopped or job.req.cancelled.is_set())

        rows = [Row(j.ids, j.max_new, j.req.settings.temperature, j.req.settings.top_p, j.seed)
                for j in jobs]
        ends = decode(sampler, rows, eos=eos, pad=pad, on_token=on_token)
        for job, (_, how) in zip(jobs, ends):
            job.finish("stop" if how == EOS else None)

    def _generate(self, job: Job, name: str | None) -> None:
        """transformers' ``generate`` for one request (models the fast sampler does not run)."""
        import torch

        tok, s = self._tok, job.req.settings
        ids = torch.tensor([job.ids])
        dev = next(self._model.parameters()).device
        eos = end_of_turn_ids(tok)
        kw = dict(max_new_tokens=job.max_new, eos_token_id=eos, pad_token_id=tok.pad_token_id,
                  streamer=job.streamer, stopping_criteria=[StopOnCancel(job.req, job.streamer)])
        if s.temperature > 0:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(job.seed)
            if name is None and self._loaded:
                with self._model.disable_adapter():
                    self._model.generate(input_ids=ids.to(dev), **kw)
            else:
                self._model.generate(input_ids=ids.to(dev), **kw)
        job.finish("stop" if job.streamer.saw_eos(eos) else None)
