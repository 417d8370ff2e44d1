"""Fast batched sampling for GRPO rollouts: a static KV cache and a plain decode loop over the
model's own weights, with the LoRA adapter merged in.

Why not ``model.generate``: on a CPU with a ~100 M-parameter model, a decode step is a handful of
small matrix products, and ``generate`` spends as long again in Python — the PEFT wrapper of every
adapted linear layer (two extra matmuls plus dispatch, ~200 modules), the decoder-layer and cache
machinery, logits processors. Here each step is, per layer, one fused q|k|v product, RoPE, two
batched products against a preallocated cache (keys stored transposed), o, one fused gate|up
product and down, with the adapter folded into the weights once per rollout (W + s·B·A, exactly
the adapted layer's function, one addmm per layer cast straight into the fused copy).

Other savings: a prompt is prefilled once and its cache copied to its ``n`` samples; rows that
have emitted end-of-turn are dropped from the batch as the batch thins out. Sampling draws from a
private ``torch.Generator`` seeded per call, so runs repeat without touching the global stream.

The adapter is folded into the weights by :mod:`.fold`.

Supported: decoder-only Llama-style models (``llama``, ``mistral`` within its sliding window,
``qwen2``) with plain LoRA or rsLoRA; :func:`fast_sampler` returns None for anything else (DoRA,
other architectures), and the caller falls back to ``generate``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fold import effective, fused, lora_parts
from .onednn import dnn_linear

# the names these had here before fold.py (tests check the sampler's weights through them)
_effective, _fused, _lora_parts = effective, fused, lora_parts

SUPPORTED = ("llama", "mistral", "qwen2")


class FastSampler:
    """The merged weights of one model state; call :meth:`sample` for completions."""

    def __init__(self, base, layers, norm_w, head_w, head_b, embed, rotary, *, packed=False):
        self.base, self.layers, self.norm_w = base, layers, norm_w
        self.head_w, self.head_b, self.embed, self.rotary = head_w, head_b, embed, rotary
        self.lin = dnn_linear if packed else F.linear     # weights prepacked for oneDNN?
        cfg = base.config
        self.eps = cfg.rms_norm_eps
        self.nh, self.nkv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.dtype = head_w.dtype

    # -- the model, one call for a prefill or a decode step --------------------------------------
    # The residual stream and the norms are float32 whatever the weights' dtype (closer to the
    # float32 policy than a bf16 residual, and one fused op per norm); the attention scale is
    # folded into the query weights; RoPE turns q and k in one pass. Per layer that is about 25
    # small ops instead of 45: at ~16 rows the op overhead, not the weight products, was half of
    # a decode step.
    def _norm(self, x, w):
        return F.rms_norm(x, (x.shape[-1],), w, self.eps).to(self.dtype)

    def _forward(self, ids, pos, cache, start: int, mask):
        """Hidden states of ``ids`` [B, T] at positions ``pos`` [B, T]; their keys/values go into
        cache columns start..start+T; ``mask`` is the allowed-key mask [B, 1, T, start+T] of a
        prefill, or for a decode step (T = 1) the additive [B, 1, start+1] one (0 / -inf)."""
        B, T = ids.shape
        x = F.embedding(ids, self.embed).float()
        cos, sin = self.rotary(x, pos)
        h2 = self.hd // 2
        cos = cos[:, :, None].to(self.dtype)
        ssin = torch.cat([-sin[..., :h2], sin[..., h2:]], -1)[:, :, None].to(self.dtype)
        end = start + T
        nh, nkv, hd = self.nh, self.nkv, self.hd
        nq, nk = nh * hd, nkv * hd
        for li, (ln1, wqkv, bqkv, wo, bo, ln2, wgu, bgu, wd, bd, act) in enumerate(self.layers):
            h = self.lin(self._norm(x, ln1), wqkv, bqkv)
            qk = h[..., :nq + nk].view(B, T, nh + nkv, hd)
            # rotate_half(t) = flip of t's halves with the first negated (the sign is in ssin)
            qk = torch.addcmul(qk * cos, qk.view(B, T, nh + nkv, 2, h2).flip(-2).view(qk.shape),
                               ssin)
            q = qk[:, :, :nh].transpose(1, 2)
            k = qk[:, :, nh:].transpose(1, 2)
            v = h[..., nq + nk:].view(B, T, nkv, hd).transpose(1, 2)
            kc, vc = cache[li]                  # keys stored transposed: [B, nkv, hd, L]
            kc[..., start:end] = k.transpose(-1, -2)
            vc[:, :, start:end] = v
            if T == 1:
                a = self._decode_attention(q, kc[..., :end], vc[:, :, :end], mask)
            else:
                a = F.scaled_dot_product_attention(
                    q, kc[..., :end].transpose(-1, -2), vc[:, :, :end], attn_mask=mask,
                    scale=1.0, enable_gqa=nkv != nh)
                a = a.transpose(1, 2).reshape(B, T, nq)
            x = x + self.lin(a, wo, bo)
            g, u = self.lin(self._norm(x, ln2), wgu, bgu).chunk(2, dim=-1)
            x = x + self.lin(act(g) * u, wd, bd)
        return self._norm(x, self.norm_w)

    def _decode_attention(self, q, kt, v, neg):
        """Attention of one new token per row: [B, nh, 1, hd] queries (already scaled) against
        the cache's keys, stored transposed [B, nkv, hd, L], and values [B, nkv, L, hd]; query
        head h reads kv head h // (nh / nkv) as SDPA's enable_gqa does; ``neg`` [B, 1, L] is 0
        where a key may be read and -inf elsewhere. Two batched products, the nh / nkv query heads
        of a kv head as the rows of one, with the softmax in float32: the scores are rounded to
        the cache's dtype first, as in transformers' eager attention in bf16 (SDPA's CPU kernel
        keeps them in float32 but is slower on a decode step's few rows). Returns
        [B, 1, nh·hd] in the weights' dtype."""
        B, nkv, hd, L = kt.shape
        g = self.nh // nkv
        s = torch.bmm(q.reshape(B * nkv, g, hd).to(kt.dtype), kt.reshape(B * nkv, hd, L))
        p = torch.softmax(s.view(B, nkv * g, L).float().add_(neg), -1).to(v.dtype)
        a = torch.bmm(p.view(B * nkv, g, L), v.reshape(B * nkv, L, hd))
        return a.view(B, 1, self.nh * hd).to(self.dtype)

    def _logits(self, h):
        return self.lin(h, self.head_w, self.head_b).float()

    # -- sampling ------------------------------------------------------------------------------
    @torch.inference_mode()       # no autograd bookkeeping at all: 6-9 % off a rollout vs no_grad
    def sample(self, prompts: list[list[int]], *, n: int, max_new_tokens: int, temperature: float,
               top_p: float, seed: int, eos: list[int], pad: int) -> list[tuple[list[int], bool]]:
        """Like :func:`~.generate.sample_completions`: ``n`` rows per prompt, each
        ``(ids up to and including the first eos, finished)``."""
        dev = self.head_w.device
        P = len(prompts)
        width = max(len(p) for p in prompts)
        total = width + max_new_tokens
        ids = torch.full((P, width), pad, dtype=torch.long)
        valid = torch.zeros((P, total), dtype=torch.bool)
        lens = torch.tensor([len(p) for p in prompts], dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            valid[i, width - len(p):] = True
        ids, valid, lens = ids.to(dev), valid.to(dev), lens.to(dev)
        pos = (torch.arange(width, device=dev)[None] - (width - lens)[:, None]).clamp(min=0)
        cache = [(torch.zeros((P, self.nkv, self.hd, total), dtype=self.dtype, device=dev),
                  torch.zeros((P, self.nkv, total, self.hd), dtype=self.dtype, device=dev))
                 for _ in self.layers]
        causal = torch.ones((width, width), dtype=torch.bool, device=dev).tril()
        allowed = (causal[None] & valid[:, None, :width])[:, None]
        allowed = allowed | ~valid[:, None, :width, None]     # padding rows attend somewhere
        h = self._forward(ids, pos, cache, 0, allowed)[:, -1]
        # one prompt → its n samples (row r = prompt r // n)
        rep = torch.arange(P, device=dev).repeat_interleave(n)
        cache = [(k[rep].contiguous(), v[rep].contiguous()) for k, v in cache]
        valid, lens, logits = valid[rep], lens[rep], self._logits(h)[rep]
        B = P * n
        out = torch.full((B, max_new_tokens), pad, dtype=torch.long, device=dev)
        n_out = torch.full((B,), max_new_tokens, dtype=torch.long, device=dev)
        rows = torch.arange(B, device=dev)            # original row of each live row
        eos_t = torch.tensor(eos, dtype=torch.long, device=dev)
        gen = torch.Generator(device=dev)
        gen.manual_seed(seed)
        alive = torch.ones(B, dtype=torch.bool, device=dev)     # per live row: no eos yet
        for t in range(max_new_tokens):
            tok = _pick(logits, temperature, top_p, gen)
            out[rows, t] = torch.where(alive, tok, pad)
            ended = alive & torch.isin(tok, eos_t)
            n_out[rows[ended]] = t + 1
            alive &= ~ended
            n_alive = int(alive.sum())
            if n_alive == 0 or t == max_new_tokens - 1:
                break
            if n_alive <= 3 * len(rows) // 4:           # thin the batch out
                idx = alive.nonzero().squeeze(1)
                rows, tok, valid, lens, alive = rows[idx], tok[idx], valid[idx], lens[idx], alive[idx]
                cache = [(k[idx], v[idx]) for k, v in cache]
            col = width + t
            valid[:, col] = True
            neg = torch.zeros((len(rows), 1, col + 1), dtype=torch.float32, device=dev)
            neg.masked_fill_(~valid[:, None, :col + 1], float("-inf"))
            h = self._forward(tok[:, None], (lens + t)[:, None], cache, col, neg)
            logits = self._logits(h[:, -1])
        res = []
        for row, m in zip(out.tolist(), n_out.tolist()):
            c = row[:m]
            finished = bool(c) and c[-1] in eos
            res.append((c, finished))
        return res


def _pick(logits, temperature: float, top_p: float, gen) -> torch.Tensor:
    """One token per row from softmax(logits / temperature), nucleus-truncated to ``top_p``:
    inverse-CDF sampling (one uniform per row against the cumulative sum), which on a CPU costs a
    fraction of ``torch.multinomial`` over a 50k vocabulary.

    The nucleus is the smallest prefix of the tokens by falling probability whose mass reaches
    ``top_p`` (a token is dropped when the mass before it exceeds ``top_p``). It is found among
    the row's ``k`` likeliest tokens (``topk``, k = 64, then 16 times as many) and only falls
    back to sorting the vocabulary when even those hold less than ``top_p``: sorting the whole
    vocabulary costs as much as a decode step, the top 64 a small fraction of it (numbers in
    benchmarks/RESULTS.md, "Numbers behind code comments"). Same tokens, in the same order, as sorting everything (tokens past the k-th can only be dropped once the first
    k hold more than ``top_p``)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, -1)
    u = torch.rand((probs.shape[0], 1), generator=gen, device=probs.device)
    if top_p >= 1.0:
        return _inverse_cdf(probs.cumsum(-1), u, None)
    out = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    todo = torch.arange(probs.shape[0], device=probs.device)
    vocab, k = probs.shape[-1], 64
    while todo.numel():
        p = probs[todo]
        if k >= vocab:
            vals, order = p.sort(-1, descending=True)
            done = torch.ones(len(todo), dtype=torch.bool, device=p.device)
        else:
            vals, order = p.topk(k, -1)                     # sorted, largest first
            done = vals.sum(-1) > top_p                     # the nucleus ends inside these k
        kept = vals.masked_fill((vals.cumsum(-1) - vals) > top_p, 0.0)
        tok = _inverse_cdf(kept.cumsum(-1), u[todo], order)
        out[todo[done]] = tok[done]
        todo, k = todo[~done], k * 16
    return out


def _inverse_cdf(cdf, u, order):
    """The token of each row at uniform ``u`` [R, 1] along its cumulative mass ``cdf`` [R, n]
    (scaled to the row's total), mapped through ``order`` [R, n] when given."""
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=cdf.shape[-1] - 1)
    return (idx if order is None else order.gather(-1, idx)).squeeze(1)


def _packer(dtype, device):
    """``pack(weight)`` for oneDNN's linear on a CPU in bfloat16, or None (elsewhere, or when
    this torch build lacks the ops or they disagree with F.linear on a probe). A bf16 weight used
    as is gets reordered into oneDNN's blocked layout on every call; packed once per rollout, a
    decode step's products are faster (benchmarks/RESULTS.md, "Numbers behind code comments"),
    with identical results."""
    if device.type != "cpu" or dtype != torch.bfloat16:
        return None
    try:
        reorder = torch.ops.mkldnn._reorder_linear_weight
        g = torch.Generator().manual_seed(0)
        w = torch.randn(24, 32, generator=g).to(dtype)
        x = torch.randn(3, 2, 32, generator=g).to(dtype)
        if not torch.allclose(dnn_linear(x, reorder(w, 16), None).float(),
                              F.linear(x, w).float(), rtol=1e-2, atol=1e-2):
            return None
    except (AttributeError, RuntimeError):
        return None
    return lambda w: reorder(w, 16)       # 16: a row-count hint, any count works


def sampler_dtype(setting: str, model) -> torch.dtype | None:
    """The dtype ``grpo.sampler_dtype`` asks the sampler to cast to (None: keep the model's).

    ``auto`` picks bfloat16 only where it is both a saving and native: float32 weights (half the
    bytes to stream per decoded token) on CUDA with bf16 support or on a CPU whose oneDNN has bf16
    kernels (AVX512-BF16 / AMX); anything else keeps the training dtype."""
    if setting == "float32":
        return torch.float32
    if setting == "bfloat16":
        return torch.bfloat16
    if setting != "auto":
        raise ValueError(f"grpo.sampler_dtype must be auto, float32 or bfloat16, not {setting!r}")
    p = next(model.parameters(), None)
    if p is None or p.dtype != torch.float32:
        return None
    if p.device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if p.device.type == "cpu":
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        return torch.bfloat16 if native else None
    return None


def fast_sampler(model, dtype: torch.dtype | None = None) -> FastSampler | None:
    """A :class:`FastSampler` for ``model`` as it is now (adapter merged), its weights cast to
    ``dtype`` when given, or None when this model or adapter is not supported (then use
    ``model.generate``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in SUPPORTED:
        return None
    body = getattr(base, "model", None)
    head = base.get_output_embeddings()
    if body is None or not hasattr(body, "layers") or not hasattr(body, "rotary_emb"):
        return None
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None
    if getattr(cfg, "model_type", None) == "mistral" and getattr(cfg, "sliding_window", None):
        return None       # a window would need its own mask; generate() handles it
    if getattr(cfg, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        return None
    if getattr(cfg, "pretraining_tp", 1) not in (1, None):
        return None

    def cast(t):
        if dtype is None or not isinstance(t, torch.Tensor) or t.dtype == dtype:
            return t
        return t.to(dtype)

    def f32(w):
        return w.detach().float()

    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    layers = []
    for layer in body.layers:
        a, m = layer.self_attn, layer.mlp
        if any(not hasattr(layer, n) for n in ("input_layernorm", "post_attention_layernorm")):
            return None
        # the attention scale 1/sqrt(head_dim) goes into the query rows
        qkv = fused((a.q_proj, a.k_proj, a.v_proj), (hd ** -0.5, 1.0, 1.0), dtype)
        o = fused((a.o_proj,), (1.0,), dtype)
        gu = fused((m.gate_proj, m.up_proj), (1.0, 1.0), dtype)
        d = fused((m.down_proj,), (1.0,), dtype)
        if None in (qkv, o, gu, d):
            return None
        layers.append((f32(layer.input_layernorm.weight), *qkv, *o,
                       f32(layer.post_attention_layernorm.weight), *gu, *d, m.act_fn))
    hw = effective(head)
    if hw is None:
        return None
    emb = base.get_input_embeddings().weight.detach()
    tied = hw[0].data_ptr() == emb.data_ptr()
    hw = (cast(hw[0]), cast(hw[1]))
    emb = hw[0] if tied else cast(emb)
    norm_w = f32(body.norm.weight)
    pack = _packer(hw[0].dtype, hw[0].device)
    if pack is None:
        return FastSampler(base, layers, norm_w, hw[0], hw[1], emb, body.rotary_emb)
    layers = [(ln1, pack(wqkv), bqkv, pack(wo), bo, ln2, pack(wgu), bgu, pack(wd), bd, act)
              for ln1, wqkv, bqkv, wo, bo, ln2, wgu, bgu, wd, bd, act in layers]
    return FastSampler(base, layers, norm_w, pack(hw[0]), hw[1], emb, body.rotary_emb,
                       packed=True)
