"""``mindprint eval``: every metric for the base model and the tuned one, in one report.

The base model is the tuned model with its adapter switched off (``disable_adapter``), so the two
columns differ only by the adapter. Greedy decoding (the default) makes the report
deterministic: the same inputs give the same report.json, apart from timings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..backends.common import atomic_dir
from ..backends.torch.load import load_for_inference
from ..errors import MindprintError
from ..export.common import check_writable
from ..measures.diversity import diversity
from ..measures.style import reference_style, style_of
from ..measures.voice import VoiceVerifier, background_texts
from ..measures.voice_data import person_texts
from . import data as D
from . import metrics as M
from .kept import kept_figures
from .report import write_report
from .summary import summary_lines  # noqa: F401 - mindprint eval's terminal table, re-exported


@dataclass
class EvalJob:
    """What to evaluate; ``cfg`` is an :class:`~mindprint.config.EvalConfig`."""

    cfg: object
    out: Path
    model: str | None = None
    adapter: str | None = None
    data_eval: list[str] = field(default_factory=list)     # a training config's data.eval
    max_length: int = 1024
    system_prompt: str | None = None
    device: str = "auto"
    person: list[str] = field(default_factory=list)      # the person's answers (voice score)
    background: list[str] = field(default_factory=list)  # more not-the-person answers


def sources(job: EvalJob) -> dict:
    """Files per metric: eval.* when given, else the training config's data.eval by format."""
    cfg = job.cfg
    fmt = D.data_format(job.data_eval) if job.data_eval else None
    return {
        "prompts": list(cfg.prompts) or (list(job.data_eval) if fmt else []),
        "chat": list(cfg.chat) or (list(job.data_eval) if fmt == "chat" else []),
        "preference": list(cfg.preference) or (list(job.data_eval) if fmt == "preference" else []),
    }


def run_eval(job: EvalJob, log=lambda s: None) -> dict:
    cfg = job.cfg
    out = check_writable(job.out, overwrite=True, kind="directory")
    src = sources(job)
    if not any(src.values()):
        raise MindprintError("nothing to evaluate: give --prompts, --chat or --preference files "
                             "(or a config whose data.eval holds held-out data)")
    items = D.load_prompts(src["prompts"], system_prompt=job.system_prompt,
                           limit=cfg.max_prompts) if src["prompts"] else []
    chat = D.load_chat(src["chat"], system_prompt=job.system_prompt,
                       limit=cfg.max_records) if src["chat"] else []
    pairs = D.load_preference(src["preference"], limit=cfg.max_records) if src["preference"] else []
    if job.adapter and not Path(job.adapter).exists():
        raise MindprintError(f"{job.adapter}: no such adapter directory")

    t_start = time.perf_counter()
    model, tok, ref = load_for_inference(job.model, job.adapter, device=job.device)
    variants = (["base"] if not job.adapter or cfg.compare_base else []) + (["tuned"] if job.adapter else [])
    refs = [it.reference for it in items]
    summary = {v: {} for v in variants}
    voice = [{"where": it.where, "topic": it.topic, "prompt": it.text, "reference": it.reference,
              "answers": {}} for it in items]
    timing: dict = {}
    ppl_rows = [{} for _ in chat]
    pref_logps: dict = {}
    verifier, voice_score = voice_verifier(job, log) if items else (None, None)
    for v in variants:
        with M.variant(model, v):
            if items:
                log(f"{v}: answering {len(items)} prompts")
                gen = M.answer(model, tok, items, max_new_tokens=cfg.max_new_tokens,
                               temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed,
                               batch_size=cfg.batch_size)
                fid, sims = M.content_similarity(gen["answers"], refs)
                agg, per = style_of(gen["answers"], refs, cfg.banned_phrases, gen["new_tokens"])
                summary[v].update(content_similarity=fid, **agg, **diversity(gen["answers"]),
                                  gen_tokens_per_s=gen["tokens_per_s"])
                probs = verifier.predict(gen["answers"]) if verifier else [None] * len(items)
                if verifier:
                    summary[v].update(**{k: x for k, x in verifier.score(gen["answers"]).items()
                                         if k != "n"}, verifier_auc=voice_score["verifier_auc"])
                timing[v] = {"generation_s": gen["seconds"], "tokens_per_s": gen["tokens_per_s"],
                             "new_tokens": sum(gen["new_tokens"])}
                for row, text, sim, p, st in zip(voice, gen["answers"], sims, probs, per):
                    row["answers"][v] = {"text": text, "similarity": sim,
                                         "voice_p": None if p is None else float(p), **st}
            if chat:
                log(f"{v}: perplexity on {len(chat)} chat records")
                p = M.perplexity(model, tok, chat, max_length=job.max_length,
                                 batch_size=cfg.batch_size)
                summary[v]["perplexity"] = p["perplexity"]
                summary[v]["nll"] = p["nll"]
                for row, s in zip(ppl_rows, p["samples"]):
                    row[v] = s
        if pairs:
            log(f"{v}: scoring {len(pairs)} preference pairs")
            with M.variant(model, v):
                pref_logps[v] = M.preference_logps(model, tok, pairs, max_length=job.max_length,
                                                   batch_size=cfg.batch_size)
    kept = None
    if job.adapter and cfg.kept:            # what the voice cost in general ability
        kept = kept_figures(model, tok, ref, {v: (lambda v=v: M.variant(model, v))
                                              for v in ("base", "tuned")},
                            n=cfg.kept, max_new_tokens=min(cfg.kept_max_new_tokens,
                                                           cfg.max_new_tokens),
                            batch_size=cfg.batch_size, max_length=job.max_length, log=log)
        for v in variants:
            summary[v].update(kept["summary"][v])
    pref_rows: list = []
    if pairs:
        if job.adapter and "base" not in pref_logps:      # the reference for implicit rewards
            with M.variant(model, "base"):
                pref_logps["base"] = M.preference_logps(model, tok, pairs, max_length=job.max_length,
                                                        batch_size=cfg.batch_size)
        for v in variants:
            acc = M.preference_accuracy(pref_logps[v], pref_logps["base"] if v == "tuned" else None)
            samples = acc.pop("samples")
            summary[v].update({k: val for k, val in acc.items() if k != "pairs"})
            if not pref_rows:
                pref_rows = [{"where": s["where"]} for s in samples]
            for row, s in zip(pref_rows, samples):
                row[v] = {k: val for k, val in s.items() if k != "where"}
    report = {
        "mindprint_version": __version__,
        "model": job.model or ref.spec, "model_path": ref.path,
        "adapter": str(Path(job.adapter).resolve()) if job.adapter else None,
        "variants": variants,
        "settings": {**{k: v for k, v in cfg.model_dump(mode="json").items()
                        if k not in ("every", "output_dir", "prompts", "chat", "preference")},
                     "max_length": job.max_length},
        "data": {"prompts": src["prompts"], "n_prompts": len(items), "chat": src["chat"],
                 "n_chat": len(chat), "preference": src["preference"], "n_pairs": len(pairs),
                 "with_reference": sum(r is not None for r in refs)},
        "summary": summary,
        "reference_style": reference_style(refs),
        "voice_score": voice_score,
        "voice": voice,
        "kept": kept and {k: x for k, x in kept.items() if k != "summary"},
        "perplexity": [{"where": r.where, **row} for r, row in zip(chat, ppl_rows)],
        "preference": pref_rows,
        "timing": {**timing, "total_s": time.perf_counter() - t_start},
    }
    with atomic_dir(out) as tmp:
        write_report(report, tmp)
    return report


def voice_verifier(job: EvalJob, log) -> tuple[VoiceVerifier | None, dict | None]:
    """The voice verifier fitted on ``job.person`` (see :mod:`mindprint.measures.voice`) and its
    held-out numbers; (None, a note) when no person's files were given."""
    if not job.person:
        return None, {"skipped": "no person's answers to fit the voice verifier on: give --person "
                      "FILE or a config (its data.train)"}
    mine, notes = person_texts(job.person)
    extra = person_texts(job.background)[0] if job.background else []
    log(f"voice score: fitting the verifier on {len(mine)} of the person's answers")
    ver = VoiceVerifier.fit(mine, background_texts(), extra_background=extra)
    held = ver.held_out()
    if held["warning"]:
        log(f"voice score: {held['warning']}")
    return ver, {"person": [str(p) for p in job.person], "verifier_auc": held["auc"],
                 "verifier_curve": held["curve"], "n_person": held["n_person"],
                 "n_background": held["n_background"], "warning": held["warning"],
                 "notes": notes + [held["sampled"]] * bool(held["sampled"])}
