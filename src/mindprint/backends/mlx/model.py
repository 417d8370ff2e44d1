"""mlx-lm implementation of the backend: load, LoRA/DoRA, log-probs, generate, save.

:class:`MLXBackend` implements :class:`~mindprint.backends.base.Backend` as the torch backend does,
so the method objects run unchanged: ``batch`` → ``token_logps`` / ``token_logps_and_kl`` /
``group_logps`` / ``completion_logps`` with ``backend.xp`` ops, and ``disabled_adapter`` for
reference passes. Gradients are explicit in mlx (``value_and_grad``), so ``no_grad`` is a no-op;
there is one process (``dist`` is a world of one) and no autocast. LoRA uses mlx-lm's own layers; PEFT's
``alpha/r`` becomes mlx-lm's raw ``scale`` and PEFT's initialisation (A uniform in ±1/√in, B = 0)
is what mlx-lm's layers already do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from ...data.packing import plan_rows
from ...errors import ModelError
from ...models import ModelRef
from ..adapter_format import _safetensors_load, peft_to_mlx, write_mlx, write_peft
from ..common import LOCAL, groups_as_rows, load_tokenizer, lora_scale, target_names
from .generate import generate
from .packing import body_parts_ok, close, packed_batch, packed_hidden, probe_batch, unpacked

LORA_LEAVES = ("lora_a", "lora_b", "m")


# -- loading -----------------------------------------------------------------------------------
def config_overrides(cfg: dict) -> dict:
    """Keys mlx-lm reads at the top level of config.json that transformers 5 nests in
    ``rope_parameters``: ``rope_theta`` (mlx-lm silently falls back to 10000 without it) and a
    non-default RoPE scaling (``rope_scaling``). Returned, never written into the user's dir."""
    rope = cfg.get("rope_parameters")
    out: dict = {}
    if isinstance(rope, dict):
        if "rope_theta" not in cfg and "rope_theta" in rope:
            out["rope_theta"] = rope["rope_theta"]
        kind = rope.get("rope_type", "default")
        if kind != "default" and not cfg.get("rope_scaling"):
            out["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return out


def pick_dtype(dtype: str):
    if dtype == "auto":
        # fp32 on CPU (as the torch backend); bf16 on Metal
        return mx.float32 if mx.default_device() == mx.cpu else mx.bfloat16
    return {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}[dtype]


def load_base(ref: ModelRef, *, dtype: str = "auto", quantize: int | None = None):
    """mlx-lm model (frozen) + the Hugging Face tokenizer, from a local model directory."""
    from mlx_lm.utils import load_model

    path = Path(ref.path)
    if not (path / "config.json").exists():
        raise ModelError(f"{ref.spec}: the mlx backend loads local model directories (and the "
                         "bundled alias); download the model first")
    cfg = json.loads((path / "config.json").read_text())
    try:
        model, _ = load_model(path, model_config=config_overrides(cfg))
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise ModelError(f"{ref.spec}: mlx-lm cannot load this model: {str(e).splitlines()[0]}") from None
    dt = pick_dtype(dtype)
    if quantize:
        model.set_dtype(dt)
        nn.quantize(model, group_size=64, bits=int(quantize),
                    class_predicate=lambda p, m: isinstance(m, nn.Linear)
                    and m.weight.shape[-1] % 64 == 0 and not p.endswith("lm_head"))
    else:
        model.set_dtype(dt)
    model.freeze()
    mx.eval(model.parameters())
    return model, load_tokenizer(str(path))


def load_with_adapter(ref: ModelRef, adapter_mlx: Path, *, dtype: str = "auto"):
    """The base with an mlx-lm-format adapter (``adapter-mlx/``) applied, in eval mode.

    mlx-lm's ``load_adapters`` inserts fresh LoRA layers, and a fresh mlx module is in training
    mode even inside a model in eval mode: their dropout (0.05 in the quickstart) would stay on and
    move the bundled model's logits by up to 0.06. ``mlx_lm.load`` calls ``model.eval()`` after
    loading adapters; so does this."""
    from mlx_lm.tuner.utils import load_adapters

    model, tok = load_base(ref, dtype=dtype)
    try:
        load_adapters(model, str(adapter_mlx))
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise ModelError(f"{adapter_mlx}: not an mlx-lm adapter for this model: "
                         f"{str(e).splitlines()[0]}") from None
    model.eval()
    mx.eval(model.parameters())
    return model, tok


def _linears(model):
    """(path, module) of the linear layers LoRA may target: inside the transformer blocks."""
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.QuantizedLinear)) and ".layers." in f".{name}" \
                and not name.endswith("lm_head"):
            yield name, mod


def add_lora(model, lora_cfg, seed: int) -> dict:
    """Replace the targeted linear layers by mlx-lm LoRA (or DoRA) layers; only they train.
    Returns what a saved adapter records: rank, alpha, scale, target names."""
    from mlx_lm.tuner.dora import DoRALinear
    from mlx_lm.tuner.lora import LoRALinear

    found = list(_linears(model))
    names = target_names({n.rsplit(".", 1)[-1] for n, _ in found}, lora_cfg.targets)
    wanted = None if names == "all-linear" else set(names)
    scale = lora_scale(lora_cfg.r, lora_cfg.alpha, lora_cfg.rslora)
    layer = DoRALinear if lora_cfg.dora else LoRALinear
    mx.random.seed(seed)             # LoRA A init is random: tie it to the run's seed
    model.freeze()
    swaps = [(n, layer.from_base(m, r=lora_cfg.r, dropout=lora_cfg.dropout, scale=scale))
             for n, m in found if wanted is None or n.rsplit(".", 1)[-1] in wanted]
    model.update_modules(tree_unflatten(swaps))
    mx.eval(model.parameters())
    return {"r": lora_cfg.r, "alpha": lora_cfg.alpha, "scale": scale, "dora": lora_cfg.dora,
            "rslora": lora_cfg.rslora, "dropout": lora_cfg.dropout,
            "targets": sorted({n.rsplit(".", 1)[-1] for n, _ in swaps}),
            "num_layers": len(model.layers)}


def lora_modules(model) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "lora_a") and hasattr(m, "linear")]


def adapter_weights(model) -> dict[str, mx.array]:
    """The trainable LoRA/DoRA tensors, by mlx-lm parameter name."""
    return {k: v for k, v in tree_flatten(model.trainable_parameters())
            if k.rsplit(".", 1)[-1] in LORA_LEAVES}


# -- log-probs ---------------------------------------------------------------------------------
def _body_and_head(model):
    """The transformer body and the output projection (a callable on hidden states), when
    logits are a plain projection; ``(None, None)`` for soft-capped / scaled heads."""
    args = getattr(model, "args", None)
    body = getattr(model, "model", None)
    if body is None or args is None or getattr(args, "final_logit_softcapping", None) \
            or getattr(args, "logit_scale", None):
        return None, None
    if getattr(model, "lm_head", None) is not None:
        return body, model.lm_head
    emb = getattr(body, "embed_tokens", None)
    if emb is not None and getattr(args, "tie_word_embeddings", True):
        return body, emb.as_linear
    return None, None


def _selected_logps(rows: mx.array, head, targets: mx.array, chunk: int = 512) -> mx.array:
    """log softmax(head(rows))[target] per row, a chunk of rows at a time."""
    out = []
    for s in range(0, rows.shape[0], chunk):
        logits = head(rows[s:s + chunk]).astype(mx.float32)
        tgt = mx.take_along_axis(logits, targets[s:s + chunk, None], axis=-1).squeeze(-1)
        out.append(tgt - mx.logsumexp(logits, axis=-1))
    return mx.concatenate(out) if len(out) > 1 else out[0]


def _scatter(batch: dict, values: mx.array) -> mx.array:
    """``[B, T]`` with ``values`` (one per trained position, row-major) at those positions."""
    if "packed_rows" in batch:
        return unpacked(batch, values)
    B, T = batch["input_ids"].shape
    flat = mx.zeros((B * (T - 1),), dtype=values.dtype).at[batch["rows"]].add(values)
    return mx.concatenate([mx.zeros((B, 1), dtype=values.dtype), flat.reshape(B, T - 1)], axis=1)


def _rows(model, batch: dict):
    """(hidden state at every position that predicts a trained token, the head), or the full
    log-softmax rows for unusual heads."""
    ids = batch["input_ids"]
    body, head = _body_and_head(model)
    if "packed_rows" in batch:      # MLXBackend.batch packs only where body and head exist
        hidden = packed_hidden(body, batch)
        return hidden.reshape(-1, hidden.shape[-1])[batch["rows"]], head
    if body is None:
        logits = model(ids)[:, :-1]
        return logits.reshape(-1, logits.shape[-1])[batch["rows"]], None
    hidden = body(ids)[:, :-1]
    return hidden.reshape(-1, hidden.shape[-1])[batch["rows"]], head


def token_logps(model, batch: dict) -> mx.array:
    """``[B, T]`` log p(token_t | tokens_<t) where ``loss_mask`` is 1, else 0 (position 0 is 0).
    Logits are computed only at trained positions; right padding needs no mask under causal
    attention."""
    if batch["n_rows"] == 0:
        return mx.zeros(batch["input_ids"].shape, dtype=mx.float32)
    rows, head = _rows(model, batch)
    if head is None:
        lp = rows.astype(mx.float32)
        sel = mx.take_along_axis(lp, batch["targets"][:, None], -1).squeeze(-1) - mx.logsumexp(lp, -1)
    else:
        sel = _selected_logps(rows, head, batch["targets"])
    return _scatter(batch, sel)


def to_batch(seqs: list[list[int]], masks: list[list[int]], pad_id: int) -> dict:
    """Right-padded ``input_ids`` / ``loss_mask`` and, for every trained target, the flat index of
    the position predicting it (``rows``, into ``[B, T-1]``) and its id (``targets``)."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int32)
    lm = np.zeros((len(seqs), width), dtype=np.int32)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, :len(s)] = s
        lm[i, :len(m)] = m
    target = lm[:, 1:].astype(bool)
    b, t = np.nonzero(target)
    rows = (b * (width - 1) + t).astype(np.int32)
    return {"input_ids": mx.array(ids), "loss_mask": mx.array(lm), "rows": mx.array(rows),
            "targets": mx.array(ids[b, t + 1]), "n_rows": int(len(rows)),
            "attention_mask": mx.array((np.arange(width)[None] < np.array([len(s) for s in seqs])[:, None])
                                       .astype(np.int32))}


# -- the backend -------------------------------------------------------------------------------
class MLXBackend:
    """The model + tokenizer pair a method works through (see :class:`~..base.Backend`)."""

    name = "mlx"
    group_layout = "rows"      # one row per completion (mlx-lm attention takes no custom mask)

    def __init__(self, model, tokenizer, lora: dict | None = None):
        from ...losses import xp as xpmod

        self.model, self.tokenizer, self.lora = model, tokenizer, lora
        self.xp = xpmod.get("mlx")
        self.dist = LOCAL
        # what reference caching keys on (never shared with torch's numbers)
        self.device = SimpleNamespace(type=f"mlx-{'cpu' if mx.default_device() == mx.cpu else 'gpu'}")
        self._can_pack: bool | None = None

    def batch(self, seqs: list[list[int]], masks: list[list[int]], *,
              pack_to: int | None = None) -> dict:
        """Padded rows, or packed ones (:func:`.packing.packed_batch`) with ``pack_to`` where
        :meth:`can_pack`, something is scored and packing saves positions (``plan_rows``)."""
        rows = plan_rows([len(s) for s in seqs], pack_to) \
            if pack_to and self.can_pack() and any(any(m[1:]) for m in masks) else None
        if rows is not None:
            return packed_batch(seqs, masks, rows, self.tokenizer.pad_token_id)
        return to_batch(seqs, masks, self.tokenizer.pad_token_id)

    def can_pack(self) -> bool:
        """Packed rows give the padded rows' log-probs on this model (see :mod:`.packing`;
        checked once, in eval mode)."""
        if self._can_pack is None:
            body, _ = _body_and_head(self.model)
            self._can_pack = body_parts_ok(body)
            if self._can_pack:
                seqs, masks, rows = probe_batch(body.embed_tokens.weight.shape[0])
                with self.inference():
                    a = token_logps(self.model, packed_batch(seqs, masks, rows, 0))
                    b = token_logps(self.model, to_batch(seqs, masks, 0))
                self._can_pack = close(a, b, body.embed_tokens.weight.dtype)
        return self._can_pack

    def token_logps(self, batch: dict) -> mx.array:
        return token_logps(self.model, batch)

    def token_logps_and_kl(self, batch: dict, tau: float) -> tuple[mx.array, mx.array]:
        """Target log-probs and τ²·KL(base ‖ tuned) per trained position (0 elsewhere); the base
        is this model with its adapters off (one extra forward, no gradient)."""
        from ...losses.kl import kl_to_base

        if batch["n_rows"] == 0:
            z = mx.zeros(batch["input_ids"].shape, dtype=mx.float32)
            return z, z
        with self.disabled_adapter():
            base_rows, head = _rows(self.model, batch)
        base_rows = mx.stop_gradient(base_rows)
        rows, _ = _rows(self.model, batch)
        tgt = batch["targets"]
        sel, kl = [], []
        for s in range(0, rows.shape[0], 512):
            if head is None:
                lt, lb = rows[s:s + 512].astype(mx.float32), base_rows[s:s + 512].astype(mx.float32)
            else:
                lt = head(rows[s:s + 512]).astype(mx.float32)
                lb = head(base_rows[s:s + 512]).astype(mx.float32)
            sel.append(mx.take_along_axis(lt, tgt[s:s + 512, None], -1).squeeze(-1)
                       - mx.logsumexp(lt, -1))
            kl.append(kl_to_base(lt, lb, tau, self.xp))
        return _scatter(batch, mx.concatenate(sel)), _scatter(batch, mx.concatenate(kl))

    def group_logps(self, groups) -> tuple[mx.array, mx.array]:
        """Summed log-probs and token counts ``[R, K]`` of each group's completions given its
        prompt (one padded row per completion); only tokens whose mask is 1 count."""
        seqs, masks, where, K, counts = groups_as_rows(groups)
        per_row = self.token_logps(self.batch(seqs, masks)).sum(-1)
        sums = mx.zeros((len(groups) * K,), dtype=per_row.dtype).at[mx.array(where)].add(per_row)
        return sums.reshape(len(groups), K), mx.array(np.array(counts, dtype=np.float32))

    # -- GRPO: rollouts and completion log-probs (methods/grpo.py calls these) ------------------
    def eos_ids(self) -> list[int]:
        from ...data.render import end_of_turn_ids

        return end_of_turn_ids(self.tokenizer)

    def sample_completions(self, prompts: list[list[int]], *, n: int, max_new_tokens: int,
                           temperature: float, top_p: float, seed: int,
                           sampler_dtype: str = "auto") -> list[tuple[list[int], bool]]:
        """``n`` completions per prompt, batched and KV-cached (:mod:`.sampling`), in the model's
        own dtype (``sampler_dtype`` is the torch sampler's cast; mlx does not cast)."""
        from .sampling import sample_completions

        return sample_completions(self.model, prompts, n=n, max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_p=top_p, seed=seed,
                                  eos=self.eos_ids())

    def completion_logps(self, prompts: list[list[int]], completions: list[list[int]],
                         temperature: float = 1.0, *, entropy: bool = False):
        """``([B, T] log-probs under softmax(logits / temperature) at the completion tokens (0
        elsewhere), the completion mask [B, T], the entropy summed over those positions or
        None)``; one padded row per prompt + completion, logits only at completion positions
        (chunked); the entropy carries no gradient."""
        batch = self.batch([list(p) + list(c) for p, c in zip(prompts, completions)],
                           [[0] * len(p) + [1] * len(c) for p, c in zip(prompts, completions)])
        if batch["n_rows"] == 0:
            return (mx.zeros(batch["input_ids"].shape, dtype=mx.float32), batch["loss_mask"],
                    0.0 if entropy else None)
        rows, head = _rows(self.model, batch)
        tgt = batch["targets"]
        sel, ent = [], 0.0
        for s in range(0, rows.shape[0], 512):
            logits = (rows[s:s + 512] if head is None else head(rows[s:s + 512])).astype(mx.float32)
            if temperature != 1.0:
                logits = logits / temperature
            lse = mx.logsumexp(logits, axis=-1)
            sel.append(mx.take_along_axis(logits, tgt[s:s + 512, None], -1).squeeze(-1) - lse)
            if entropy:
                lp = mx.stop_gradient(logits - lse[:, None])
                ent += float(-(mx.exp(lp) * lp).sum().item())
        lp = _scatter(batch, mx.concatenate(sel) if len(sel) > 1 else sel[0])
        return lp, batch["loss_mask"], (ent if entropy else None)

    def no_grad(self):
        return contextlib.nullcontext()

    def autocast(self):
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def inference(self):
        """Eval mode (no dropout), the training mode restored after; no gradient is taken outside
        ``value_and_grad`` anyway."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    @contextlib.contextmanager
    def disabled_adapter(self):
        """The base model, for reference passes: the LoRA layers' own base linears swapped in
        (exact for LoRA and DoRA alike), swapped back afterwards."""
        mods = lora_modules(self.model)
        self.model.update_modules(tree_unflatten([(n, m.linear) for n, m in mods]))
        try:
            yield
        finally:
            self.model.update_modules(tree_unflatten(mods))

    def weights_hash(self) -> str:
        """sha256 of the adapter-free weights, for the reference log-prob cache."""
        h = hashlib.sha256()
        with self.disabled_adapter():
            params = dict(tree_flatten(self.model.parameters()))
        for name in sorted(params):
            a = np.array(params[name].astype(mx.float32)) if params[name].dtype == mx.bfloat16 \
                else np.array(params[name])
            h.update(f"{name}:{params[name].dtype}:{tuple(a.shape)};".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def generate(self, prompts: list[list[dict]], *, max_new_tokens: int = 200,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 stats: dict | None = None) -> list[str]:
        return generate(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                        temperature=temperature, top_p=top_p, seed=seed, stats=stats)

    def save_adapter(self, path: Path, meta: dict, *, mlx_path: Path | None = None) -> None:
        save_adapter(self.model, self.lora, path, meta, mlx_path=mlx_path)

    def load_adapter(self, path: Path) -> None:
        load_adapter_weights(self.model, path)


# -- saving ------------------------------------------------------------------------------------
def save_adapter(model, lora: dict, path: Path, meta: dict, *, mlx_path: Path | None = None) -> None:
    """PEFT-format adapter at ``path`` (loads with ``PeftModel.from_pretrained``) and, when
    ``mlx_path`` is given, the mlx-lm format there; each written atomically."""
    weights = {k: np.array(v.astype(mx.float32)) for k, v in adapter_weights(model).items()}
    write_peft(path, weights, r=lora["r"], alpha=lora["alpha"], dora=lora["dora"],
               rslora=lora["rslora"], dropout=lora["dropout"],
               base_model=meta.get("base_model_path") or meta.get("base_model"), meta=meta)
    if mlx_path is not None:
        write_mlx(mlx_path, weights, r=lora["r"], scale=lora["scale"], dora=lora["dora"],
                  dropout=lora["dropout"], num_layers=lora["num_layers"], meta=meta)


def load_adapter_weights(model, adapter: Path) -> None:
    """Copy a saved PEFT-format adapter's weights into ``model``'s LoRA layers (same layout)."""
    f = Path(adapter) / "adapter_model.safetensors"
    if not f.exists():
        raise ModelError(f"{adapter}: no adapter_model.safetensors to continue from")
    weights = peft_to_mlx(_safetensors_load(f))
    own = adapter_weights(model)
    if set(weights) != set(own) or any(weights[k].shape != tuple(own[k].shape) for k in own):
        raise ModelError(f"{adapter}: its LoRA layout does not match this config's (lora.r / "
                         f"lora.targets must be the same)")
    model.load_weights([(k, mx.array(v).astype(own[k].dtype)) for k, v in weights.items()],
                       strict=False)
