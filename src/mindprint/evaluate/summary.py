"""The parts of an evaluation report that both its writer (:mod:`.runner`) and its renderer
(:mod:`.report`) read: the summary rows, the terminal table and the JSON text of report.json."""

from __future__ import annotations

import json

# summary rows: key, label, better ("high", "low" or None), format
SUMMARY_ROWS = [
    ("voice_match", "voice match (P answer is the person's)", "high", "{:.3f}"),
    ("voice_attribution", "  answers attributed to the person (p>0.5)", "high", "{:.3f}"),
    ("verifier_auc", "  voice verifier held-out AUC", None, "{:.3f}"),
    ("content_similarity", "content similarity (cosine, MiniLM)", "high", "{:.4f}"),
    ("perplexity", "perplexity on held-out chat", "low", "{:.3f}"),
    ("logp_accuracy", "preference accuracy: log p(chosen) > log p(rejected)", "high", "{:.3f}"),
    ("avg_logp_accuracy", "  … per-token mean log p", "high", "{:.3f}"),
    ("implicit_accuracy", "preference accuracy: implicit reward margin > 0", "high", "{:.3f}"),
    ("implicit_margin_mean", "  mean implicit reward margin (nats)", "high", "{:.3f}"),
    ("markdown_adherence", "markdown adherence (lists/headings as the reference)", "high", "{:.3f}"),
    ("list_rate", "answers with a list", None, "{:.3f}"),
    ("heading_rate", "answers with a heading", None, "{:.3f}"),
    ("kept_likelihood_ratio", "kept: likelihood of base's everyday answers", "high", "{:.3f}"),
    ("kept_logprob", "  … their mean log-prob (nats/token)", "high", "{:.3f}"),
    ("kept_similarity", "kept: similarity to base's everyday answers", "high", "{:.3f}"),
    ("banned_phrase_hits", "banned-phrase hits", "low", "{:d}"),
    ("banned_answer_rate", "answers with a banned phrase", "low", "{:.3f}"),
    ("answer_words_mean", "answer length (words, mean)", None, "{:.1f}"),
    ("distinct_1", "distinct-1 (unique words / words)", "high", "{:.3f}"),
    ("distinct_2", "distinct-2 (unique word pairs / pairs)", "high", "{:.3f}"),
    ("loop_share", "answers that loop (repeated 4-grams ≥ 25%)", "low", "{:.3f}"),
    ("answer_tokens_mean", "answer length (tokens, mean)", None, "{:.1f}"),
    ("gen_tokens_per_s", "generation speed (tokens/s)", "high", "{:.1f}"),
]


def summary_lines(report: dict) -> list[str]:
    """A short text table for the terminal."""
    vs = report["variants"]
    lines = [f"{'metric':48s}" + "".join(f"{v:>12s}" for v in vs)]
    for key, label, _, fmt in SUMMARY_ROWS:
        vals = [report["summary"][v].get(key) for v in vs]
        if all(x is None for x in vals):
            continue
        cells = "".join(f"{fmt.format(x) if x is not None else '–':>12s}" for x in vals)
        lines.append(f"{label[:48]:48s}{cells}")
    return lines


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"
