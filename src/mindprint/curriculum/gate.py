"""The gate after each topic: the topic's adapter and the base model on the topic's held-out
records through ``mindprint eval``'s runner, and the thresholds those numbers must meet."""

from __future__ import annotations

from pathlib import Path

from ..config import Config, GateConfig
from ..data.records import ChatRecord, PreferenceRecord
from ..evaluate.runner import EvalJob, run_eval
from .plan import PREF_METRIC, Topic, voice_prompts, write_jsonl


def evaluate_topic(cfg: Config, topic: Topic, tdir: Path, log) -> dict:
    """Voice match (the voice verifier fitted on data.train), content similarity (and perplexity /
    preference accuracy where the held-out split has chats / pairs) of the topic's adapter and of
    the base model, through ``mindprint eval``'s runner. General ability kept (the everyday
    prompts, :mod:`mindprint.evaluate.kept`) is measured only when the gate has a kept threshold:
    every topic would otherwise answer them again."""
    files = {"prompts": voice_prompts(topic.held_out),
             "chat": [r for r in topic.held_out if isinstance(r, ChatRecord)],
             "preference": [r for r in topic.held_out if isinstance(r, PreferenceRecord)]}
    paths = {k: [str(write_jsonl(tdir / "data" / f"heldout_{k}.jsonl", v))] if v else []
             for k, v in files.items()}
    wants_kept = topic.gate.min_kept_likelihood_ratio is not None \
        or topic.gate.min_kept_similarity is not None
    ecfg = cfg.eval.model_copy(update={**paths, "compare_base": True, "every": 0,
                                       "kept": cfg.eval.kept if wants_kept else 0})
    report = run_eval(EvalJob(cfg=ecfg, out=tdir / "eval", adapter=str(tdir / "adapter"),
                              max_length=cfg.data.max_length, system_prompt=cfg.data.system_prompt,
                              person=list(cfg.data.train)),
                      log=lambda s: log(f"  eval {s}"))
    s = report["summary"]
    pref_key = PREF_METRIC[topic.method]
    out = {"n_prompts": len(files["prompts"][:ecfg.max_prompts]), "n_pairs": len(files["preference"])}
    for key, name in (("voice_match", "voice_match"), ("content_similarity", "content_similarity"),
                      ("perplexity", "perplexity"), (pref_key, "pref_accuracy"),
                      ("kept_likelihood_ratio", "kept_likelihood_ratio"),
                      ("kept_similarity", "kept_similarity")):
        if key in s.get("tuned", {}):
            out[name] = s["tuned"][key]
            out[f"base_{name}"] = s["base"].get(key)     # None for the kept figures
    return out


# the gate's lower bounds: (figure, its label, said when the figure is missing). General ability
# kept: the tuned model's likelihood of the base model's everyday answers relative to the base's
# (1 = nothing lost) and its own answers' similarity to them
_KEPT = "general ability kept"
MIN_GATES = (
    ("content_similarity", "content similarity",
     "no held-out answers to measure content similarity"),
    ("voice_match", "voice match", "no held-out answers to measure voice match"),
    ("kept_likelihood_ratio", f"{_KEPT} (likelihood of the base model's everyday answers)",
     f"{_KEPT} (likelihood) was not measured (eval.kept is 0?)"),
    ("kept_similarity", f"{_KEPT} (similarity to the base model's everyday answers)",
     f"{_KEPT} (similarity) was not measured (eval.kept is 0?)"),
)


def gate_result(gate: GateConfig, ev: dict) -> list[str]:
    """Reasons the gate fails (empty: passed)."""
    why = []
    for key, label, missing in MIN_GATES:
        low = getattr(gate, f"min_{key}")
        if low is None:
            continue
        v = ev.get(key)
        if v is None:
            why.append(missing)
        elif v < low:
            why.append(f"{label} {v:.4f} < min_{key} {low}")
    if gate.min_gain_over_base is not None:
        v, b = ev.get("content_similarity"), ev.get("base_content_similarity")
        if v is None or b is None:
            why.append("no held-out answers to compare content similarity with the base model's")
        elif v - b < gate.min_gain_over_base:
            why.append(f"content similarity {v:.4f} is not {gate.min_gain_over_base} above the "
                       f"base model's {b:.4f}")
    if gate.min_pref_accuracy is not None and ev.get("pref_accuracy") is not None \
            and ev["pref_accuracy"] < gate.min_pref_accuracy:
        why.append(f"preference accuracy {ev['pref_accuracy']:.3f} < min_pref_accuracy "
                   f"{gate.min_pref_accuracy}")
    return why
