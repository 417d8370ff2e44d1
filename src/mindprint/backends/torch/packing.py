"""Prompt groups: one prompt, several completions, one packed row.

A preference pair is a prompt with two completions. Packed as one row [prompt | chosen | rejected]
where each completion attends to the prompt and to itself only and continues the prompt's
positions, the prompt is computed once instead of twice and nothing is padded to the longer
completion. Models whose attention ignores custom masks fall back to one row per completion
(:func:`group_logps_by_rows`; :func:`shared_prompt_works` decides, once per model).

Attention for packed rows, computed per branch: with a [W, W] block mask, SDPA computes every query
against every key of the packed row: for a prompt of P tokens and K completions of L, (P + K·L)²
scores, nearly all masked. :func:`group_attention` lets the prompt's queries attend causally to the
prompt, and each branch's queries to [prompt; branch] keys gathered into a batch of their own:
P² + K·L·(P + L) scores, ~K/2 times fewer for short prompts, with the same values. It is registered
as a transformers attention function (``GROUP_ATTENTION``) and switched on for the packed forward
only (:func:`group_hidden`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import groups_as_rows
from .logps import decoder_and_head, selected_logps, to_batch, token_logps


def group_batch(groups, pad_id: int, device, mask_kind: str) -> dict:
    """Tensors for ``groups`` = [(prompt_ids, [(completion_ids, completion_mask), ...]), ...].

    Besides input_ids / position_ids it holds, for every trained token, the row, the position
    whose hidden state predicts it, its id and its flat branch index ``row * K + k`` (K = the most
    completions in a group). ``mask_kind`` "layout" adds the index tensors of
    :func:`group_attention` (no ``[W, W]`` mask is built); "bool" / "float" add a 4-D attention
    mask for SDPA / eager attention instead.
    """
    K = max(len(b) for _, b in groups)
    width = max(len(p) + sum(len(c) for c, _ in b) for p, b in groups)
    R = len(groups)
    ids = torch.full((R, width), pad_id, dtype=torch.long)
    pos = torch.zeros((R, width), dtype=torch.long)
    seg = torch.full((R, width), -2, dtype=torch.long)      # -1 prompt, k branch k, -2 padding
    rows, pred, tgt, flat, spans = [], [], [], [], []
    for r, (p, branches) in enumerate(groups):
        P = len(p)
        ids[r, :P] = torch.tensor(p, dtype=torch.long)
        pos[r, :P] = torch.arange(P)
        seg[r, :P] = -1
        s = P
        spans.append((P, []))
        for k, (c, m) in enumerate(branches):
            L = len(c)
            ids[r, s:s + L] = torch.tensor(c, dtype=torch.long)
            pos[r, s:s + L] = torch.arange(P, P + L)
            seg[r, s:s + L] = k
            spans[-1][1].append((s, L))
            for j in range(L):
                if m[j]:
                    rows.append(r)
                    pred.append(s + j - 1 if j else P - 1)   # the first token follows the prompt
                    tgt.append(c[j])
                    flat.append(r * K + k)
            s += L
    out = {"input_ids": ids.to(device), "position_ids": pos.to(device)}
    if mask_kind == "layout":
        out["layout"] = _branch_layout(spans, K, width, device)
    else:
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        same = seg[:, :, None] == seg[:, None, :]
        allowed = causal & ((seg == -1)[:, None, :] | same | (seg == -2)[:, :, None])
        if mask_kind == "bool":
            att = allowed[:, None]
        else:   # additive float mask for eager attention
            att = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(
                ~allowed, torch.finfo(torch.float32).min)[:, None]
        out["attention_mask"] = att.to(device)
    counts = [[int(sum(m)) for _, m in b] + [0] * (K - len(b)) for _, b in groups]
    as_long = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    out.update(rows=as_long(rows), pred=as_long(pred), targets=as_long(tgt), flat=as_long(flat),
               shape=(R, K), counts=torch.tensor(counts, dtype=torch.float32, device=device))
    return out


GROUP_ATTENTION = "mindprint_branches"


def _branch_layout(spans, K: int, width: int, device) -> dict:
    """Index tensors of :func:`group_attention` for rows ``spans`` = [(P, [(start, L), ...]), ...]:
    positions of the prompt queries ``pq`` [R, Pm], of each branch's queries ``bq`` [R, K·Lm],
    of each branch's keys (prompt then branch) ``kidx`` [R, K·(Pm+Lm)], the allowed-key masks,
    and ``src`` [R, W]: where each row position's output sits in [prompt outputs | branch
    outputs]. Padded slots point at position 0 and are masked (a query slot with nothing to
    attend to attends to everything, so no softmax row is all −inf)."""
    R = len(spans)
    Pm = max(P for P, _ in spans)
    Lm = max([L for _, b in spans for _, L in b] or [1])
    pq = torch.zeros((R, Pm), dtype=torch.long)
    pvalid = torch.zeros((R, Pm), dtype=torch.bool)
    bq = torch.zeros((R, K, Lm), dtype=torch.long)
    bvalid = torch.zeros((R, K, Lm), dtype=torch.bool)
    src = torch.zeros((R, width), dtype=torch.long)
    for r, (P, branches) in enumerate(spans):
        pq[r, :P] = torch.arange(P)
        pvalid[r, :P] = True
        src[r, :P] = torch.arange(P)
        for k, (s, L) in enumerate(branches):
            bq[r, k, :L] = torch.arange(s, s + L)
            bvalid[r, k, :L] = True
            src[r, s:s + L] = Pm + k * Lm + torch.arange(L)
    causal_p = torch.ones((Pm, Pm), dtype=torch.bool).tril()
    mask_p = (causal_p[None] & pvalid[:, None, :]) | ~pvalid[:, :, None]
    causal_b = torch.ones((Lm, Lm), dtype=torch.bool).tril()
    keys_b = torch.cat([pvalid[:, None, None, :].expand(R, K, Lm, Pm),
                        causal_b[None, None] & bvalid[:, :, None, :]], dim=-1)
    mask_b = keys_b | ~bvalid[..., None]
    kidx = torch.cat([pq[:, None].expand(R, K, Pm), bq], dim=-1)
    to = lambda t: t.to(device)  # noqa: E731
    return {"K": K, "Pm": Pm, "Lm": Lm, "pq": to(pq), "bq": to(bq.reshape(R, K * Lm)),
            "kidx": to(kidx.reshape(R, K * (Pm + Lm))), "src": to(src),
            "mask_p": to(mask_p[:, None]), "mask_b": to(mask_b.reshape(R * K, 1, Lm, Pm + Lm))}


def _flat_rows(idx: torch.Tensor, width: int) -> torch.Tensor:
    """Positions ``idx`` [R, N] of R rows of ``width`` as indices into the R·width flat rows."""
    return (idx + torch.arange(idx.shape[0], device=idx.device)[:, None] * width).reshape(-1)


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x`` [R, h, W, D] at positions ``idx`` [R, N] → [R, h, N, D]. transformers' q/k/v are
    transposed views of [R, W, h·D] rows: those are picked whole (index_select, and index_add in
    the backward: row copies) rather than element by element (gather / scatter_add)."""
    R, h, W, D = x.shape
    xt = x.transpose(1, 2)
    if xt.is_contiguous():
        rows = xt.reshape(R * W, h * D).index_select(0, _flat_rows(idx, W))
        return rows.view(R, idx.shape[1], h, D).transpose(1, 2)
    return x.gather(2, idx[:, None, :, None].expand(-1, h, -1, D))


def _attend(q, k, v, allowed, scale: float, dropout: float) -> torch.Tensor:
    """softmax(q kᵀ · scale, masked to ``allowed``) v for q [N, H, Lq, D], k/v [N, Hkv, Lk, D]
    (query head h reads key head h // (H / Hkv)), ``allowed`` [N, 1, Lq, Lk]. On a CPU as two
    matmuls with the softmax in float32 (these per-branch blocks are small; SDPA's CPU flash
    kernel is slower on them, most of all in the backward); elsewhere SDPA."""
    N, H, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    if q.device.type != "cpu" or dropout:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout,
                                              scale=scale, enable_gqa=H != Hkv)
    g = H // Hkv
    s = torch.matmul(q.reshape(N, Hkv, g * Lq, D), k.transpose(-1, -2)).float() * scale
    s = s.view(N, Hkv, g, Lq, Lk).masked_fill(~allowed[:, :, None], float("-inf"))
    p = torch.softmax(s, -1).to(v.dtype).view(N, Hkv, g * Lq, Lk)
    return torch.matmul(p, v).view(N, H, Lq, D)


def group_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                    scaling: float | None = None, mp_layout: dict | None = None, **kwargs):
    """transformers attention function for prompt-shared rows (``mp_layout`` from
    :func:`_branch_layout`); without a layout it is SDPA. query [R, H, W, D], key/value
    [R, Hkv, W, D]; returns ([R, W, H, D], None) like the library's own functions."""
    if mp_layout is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    lay = mp_layout
    R, H, _, D = query.shape
    Hkv = key.shape[1]
    K, Pm, Lm = lay["K"], lay["Pm"], lay["Lm"]
    scale = D ** -0.5 if scaling is None else scaling
    pq = lay["pq"]
    out_p = _attend(_take(query, pq), _take(key, pq), _take(value, pq), lay["mask_p"], scale,
                    dropout)
    per_branch = lambda x, n, h: x.view(R, h, K, n, D).transpose(1, 2).reshape(R * K, h, n, D)  # noqa: E731
    qb = per_branch(_take(query, lay["bq"]), Lm, H)
    kb = per_branch(_take(key, lay["kidx"]), Pm + Lm, Hkv)
    vb = per_branch(_take(value, lay["kidx"]), Pm + Lm, Hkv)
    out_b = _attend(qb, kb, vb, lay["mask_b"], scale, dropout)
    # [prompt outputs | branch outputs] as [R, Pm + K·Lm, H, D] rows, then each row position's
    # output picked whole: the [R, W, H, D] result, contiguous, with no transposing copy
    out = torch.cat([out_p.transpose(1, 2),
                     out_b.view(R, K, H, Lm, D).permute(0, 1, 3, 2, 4).reshape(R, K * Lm, H, D)],
                    dim=1)
    src = lay["src"]
    rows = out.view(-1, H * D).index_select(0, _flat_rows(src, out.shape[1]))
    return rows.view(R, src.shape[1], H, D), None


def _layout_ok(body) -> bool:
    """Per-branch attention applies: the body dispatches attention by name (sdpa/eager), with no
    sliding window, soft-capping or gradient checkpointing (whose recomputation would run after
    the switch back)."""
    cfg = getattr(body, "config", None)
    if cfg is None or getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if getattr(body, "gradient_checkpointing", False) or getattr(cfg, "attn_logit_softcapping", None):
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    return True


def group_kind(model) -> str | None:
    """How prompt-shared rows are attended: "layout" (:func:`group_attention`), a 4-D mask
    ("bool" for SDPA, "float" for eager), or None (unsupported: one row per completion)."""
    body, _ = decoder_and_head(model)
    if body is not None and _layout_ok(body):
        return "layout"
    return _mask_kind(model)


def group_hidden(model, batch: dict, body=None):
    """Last hidden states ``[R, W, d]`` of :func:`group_batch` rows, or the logits when the model
    has no plain decoder body (``body`` None and no layout)."""
    lay = batch.get("layout")
    if lay is None:
        kw = dict(use_cache=False, input_ids=batch["input_ids"],
                  attention_mask=batch["attention_mask"], position_ids=batch["position_ids"])
        return body(**kw).last_hidden_state if body is not None else model(**kw).logits
    from transformers import AttentionInterface

    if GROUP_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(GROUP_ATTENTION, group_attention)
    cfg = body.config
    before = cfg._attn_implementation
    cfg._attn_implementation = GROUP_ATTENTION
    try:
        return body(use_cache=False, input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                    mp_layout=lay).last_hidden_state
    finally:
        cfg._attn_implementation = before


def group_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums, counts)``, each ``[R, K]``: summed log-probs and trained-token counts per completion."""
    R, K = batch["shape"]
    body, head = decoder_and_head(model)
    if body is None:
        logits = group_hidden(model, batch)
        lp = torch.log_softmax(logits[batch["rows"], batch["pred"]].float(), dim=-1)
        sel = lp.gather(-1, batch["targets"][:, None]).squeeze(-1)
    else:
        hidden = group_hidden(model, batch, body)
        sel = selected_logps(hidden[batch["rows"], batch["pred"]], head.weight, head.bias,
                              batch["targets"])
    sums = torch.zeros(R * K, dtype=sel.dtype, device=sel.device).index_add(0, batch["flat"], sel)
    return sums.view(R, K), batch["counts"]


def group_logps_by_rows(model, groups, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Same result as :func:`group_logps` with one padded row per completion (the fallback)."""
    seqs, masks, where, K, counts = groups_as_rows(groups)
    b = to_batch(seqs, masks, pad_id, device)
    per_row = token_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"]).sum(-1)
    idx = torch.tensor(where, dtype=torch.long, device=per_row.device)
    sums = torch.zeros(len(groups) * K, dtype=per_row.dtype, device=per_row.device)
    return (sums.index_add(0, idx, per_row).view(len(groups), K),
            torch.tensor(counts, dtype=torch.float32, device=per_row.device))


def _mask_kind(model) -> str | None:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return {"sdpa": "bool", "eager": "float"}.get(impl)


@torch.no_grad()
def shared_prompt_works(model, pad_id: int, device) -> bool:
    """Check once that this model honours a custom 4-D mask and position ids: a shared-prompt
    row must give the same log-probs as one row per completion."""
    kind = group_kind(model)
    if kind is None:
        return False
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    tok = lambda n: torch.randint(0, vocab, (n,), generator=g).tolist()  # noqa: E731
    groups = [(tok(7), [(tok(5), [1] * 5), (tok(3), [1, 0, 1])]), (tok(4), [(tok(6), [1] * 6)])]
    was_training = model.training
    model.eval()
    try:
        a, _ = group_logps(model, group_batch(groups, pad_id, device, kind))
        b, _ = group_logps_by_rows(model, groups, pad_id, device)
    except Exception:   # noqa: BLE001 - any refusal of the mask means: use the fallback
        return False
    finally:
        model.train(was_training)
    half = next(model.parameters()).dtype != torch.float32
    tol = 5e-2 if half else 1e-3
    return bool(torch.allclose(a, b, rtol=tol, atol=tol))


def _prompt_runs(prompts: list[list[int]]) -> list[tuple[list[int], list[int]]]:
    """Consecutive entries with the same prompt: ``[(prompt ids, [index, ...]), ...]``."""
    out: list[tuple[list[int], list[int]]] = []
    for i, p in enumerate(prompts):
        if out and out[-1][0] == p:
            out[-1][1].append(i)
        else:
            out.append((list(p), [i]))
    return out


def packed_completion_logps(model, prompts: list[list[int]], completions: list[list[int]],
                            pad_id: int, temperature: float = 1.0, *, entropy: bool = False):
    """``([N, L] log-probs, [N, L] mask, entropy sum or None)`` of every token of each completion
    (L = the longest completion) given its prompt, with the completions of consecutive equal
    prompts packed into one row after a single copy of the prompt: each attends to the prompt and
    to itself only and continues the prompt's positions (:func:`group_batch`), so the prompt is
    computed once per group instead of once per completion and nothing is padded to the longest
    completion of the group. Same values as one row per completion. Needs a plain decoder body
    and LM head (:func:`~.logps.decoder_and_head`)."""
    runs = _prompt_runs(prompts)
    dev = next(model.parameters()).device
    gb = group_batch([(p, [(completions[i], [1] * len(completions[i])) for i in idx])
                      for p, idx in runs], pad_id, dev, group_kind(model))
    si, sj = [], []
    for _, idx in runs:
        for i in idx:
            si += [i] * len(completions[i])
            sj += range(len(completions[i]))
    body, head = decoder_and_head(model)
    hidden = group_hidden(model, gb, body)
    rows = hidden[gb["rows"], gb["pred"]]
    w, b = head.weight, head.bias
    if temperature != 1.0:
        rows = rows / temperature
        b = None if b is None else b / temperature
    ent = torch.empty(rows.shape[0], dtype=torch.float32, device=dev) if entropy else None
    sel = selected_logps(rows, w, b, gb["targets"], entropy_out=ent)
    L = max(len(c) for c in completions)
    si_t = torch.tensor(si, dtype=torch.long, device=dev)
    sj_t = torch.tensor(sj, dtype=torch.long, device=dev)
    logps = torch.zeros((len(completions), L), dtype=sel.dtype, device=dev).index_put((si_t, sj_t), sel)
    lens = torch.tensor([len(c) for c in completions], device=dev)
    mask = (torch.arange(L, device=dev)[None] < lens[:, None]).long()
    return logps, mask, (float(ent.sum()) if entropy else None)
