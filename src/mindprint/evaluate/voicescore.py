"""``mindprint eval voice-score``: the voice verifier (:mod:`mindprint.measures.voice`) fitted on
a person's files, scoring arbitrary texts.

Output: one probability per scored text, in order (stdout, one a line), and on stderr the
aggregate ``voice_match`` / ``voice_attribution``, the verifier's held-out AUC and any warning;
with ``--json`` one object ``{"scores": [...], "verifier_auc": ..., ...}`` on stdout.
"""

from __future__ import annotations

import json
import sys

from ..measures.voice import VoiceVerifier, background_texts
from ..measures.voice_data import person_texts, scored_texts


def voice_score(person: list[str], texts: list[str], background: list[str] = ()) -> dict:
    """Fit on the ``person`` files (+ the bundled background and the ``background`` files), score
    the ``texts`` files. Returns the ``--json`` object."""
    mine, notes = person_texts(person)
    extra = person_texts(background)[0] if background else []
    scored = scored_texts(texts)
    ver = VoiceVerifier.fit(mine, background_texts(), extra_background=extra)
    probs = ver.predict([t for t, _ in scored])
    agg = ver.score([t for t, _ in scored])
    held = ver.held_out()
    return {"scores": [round(float(p), 6) for p in probs],
            "where": [w for _, w in scored],
            "voice_match": agg["voice_match"], "voice_attribution": agg["voice_attribution"],
            "verifier_auc": held["auc"], "verifier_curve": held["curve"],
            "n_person": held["n_person"], "n_background": held["n_background"],
            "warning": held["warning"], "notes": notes + [held["sampled"]] * bool(held["sampled"])}


def cmd_voice_score(args) -> int:
    res = voice_score(args.person, args.texts, args.background or [])
    if args.json:
        print(json.dumps(res, ensure_ascii=False))
        return 0
    for s in res["scores"]:
        print(f"{s:.4f}")
    err = lambda s: print(s, file=sys.stderr)  # noqa: E731
    fmt = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    err(f"voice_match {fmt(res['voice_match'])}  voice_attribution "
        f"{fmt(res['voice_attribution'])}  verifier_auc {res['verifier_auc']:.3f} "
        f"({res['n_person']} of the person's texts vs {res['n_background']} others, k-fold)")
    for line in res["notes"] + ([res["warning"]] if res["warning"] else []):
        err(f"warning: {line}")
    return 0
