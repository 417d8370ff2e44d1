"""Measurements behind the voice verifier (src/mindprint/measures/voice.py); numbers go to
RESULTS.md under "Voice score".

For each persona (the bundled one and the test fixtures under tests/evaluate/fixtures/voices/):

* held-out AUCs: 5 folds over the person's answers; a verifier fitted on 4/5 of them plus the
  bundled background scores the held-out fifth, the generic-assistant answers and another
  person's answers to the same questions (never seen in fitting);
* worst other person: the same, against each of the other fixture personas in turn (all answer
  the same 40 questions); the lowest AUC and whom it was against;
* topic sway: fitted on the person's answers of one topic only, it scores the person's answers
  on the other topic against another person's answers on the fitted topic (same questions).
  AUC > 0.5 means the voice wins over the topic; a content model scores < 0.5 here;
* every pair: the same held-out AUC for every ordered pair of fixture personas (the person's
  held-out answers vs the other's), summarized as min / mean / pairs below 0.9, separately for
  the pairs with ``kofi`` and ``dee``, personas written after the choices they check.

Run: .venv/bin/python benchmarks/voice_score.py [--minilm] [--kind masked+dense]
[--background-first 267]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

from mindprint.measures import voice as V
from mindprint.measures.features import WORD_RE

ROOT = Path(__file__).resolve().parents[1]
FX = ROOT / "tests/evaluate/fixtures/voices"
# the fixture personas, each answering the same 40 questions; the "other person" of each is the
# next one in this order (the test's pairing), the worst other person is over all of them
NAMES = ["marguerite", "jaz", "rolf", "beatriz", "stan", "noor"]
# written after the background and features were chosen (session 11), to check that a change
# helps beyond the personas it was measured on; its "other person" is the first of NAMES
HELD_OUT = ["kofi", "dee"]
ALL = NAMES + HELD_OUT


def answers(path, topic=None):
    out = []
    for ln in open(path, encoding="utf-8"):
        r = json.loads(ln)
        if topic is None or r.get("topic") == topic:
            out.append(r["messages"][-1]["content"])
    return out


def personas():
    for i, n in enumerate(ALL):
        other = NAMES[(i + 1) % len(NAMES)]
        yield (n, answers(FX / f"{n}.jsonl"), answers(FX / f"{other}.jsonl"),
               answers(FX / "generic.jsonl"),
               {t: answers(FX / f"{n}.jsonl", t) for t in ("home", "work")},
               {t: answers(FX / f"{other}.jsonl", t) for t in ("home", "work")},
               {m: answers(FX / f"{m}.jsonl") for m in ALL if m != n})
    train = answers(ROOT / "examples/data/persona_train.jsonl")
    ev = answers(ROOT / "examples/data/persona_eval.jsonl")
    by = {t: answers(ROOT / "examples/data/persona_train.jsonl", t) for t in ("cycles", "craft")}
    yield ("bundled", train + ev, answers(FX / "persona_other.jsonl"),
           answers(FX / "persona_generic.jsonl"), by, None, {})


class Delta:
    """Cosine Delta (Smith & Aldridge 2011): z-scored frequencies of the most frequent words,
    cosine to the person's centroid minus cosine to the background's."""

    def __init__(self, n=300):
        self.n = n

    def fit(self, texts, y):
        self.vec = TfidfVectorizer(token_pattern=WORD_RE.pattern, lowercase=True, use_idf=False,
                                   norm="l1", max_features=self.n).fit(texts)
        x = self.vec.transform(texts).toarray()
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-9
        z = (x - self.mu) / self.sd
        y = np.asarray(y)
        self.c1, self.c0 = z[y == 1].mean(0), z[y == 0].mean(0)
        return self

    def predict(self, texts):
        z = (self.vec.transform(texts).toarray() - self.mu) / self.sd
        cos = lambda c: z @ c / (np.linalg.norm(z, axis=1) * np.linalg.norm(c) + 1e-9)  # noqa
        return cos(self.c1) - cos(self.c0)


def make(kind):
    if kind == "delta":
        return Delta()
    m = V._model(kind)
    m.predict = lambda t, m=m: m.predict_proba(t)[:, 1]
    return m


def auc(pos, neg):
    return float(roc_auc_score([1] * len(pos) + [0] * len(neg), list(pos) + list(neg)))


def evaluate(kind, person, other, generic, by_topic, bg, others=None):
    s_p, s_o, s_g = [], [], []
    s_all = {m: [] for m in others or {}}
    for tr, te in KFold(5, shuffle=True, random_state=0).split(person):
        mine = [person[i] for i in tr]
        neg = V.length_matched(mine, bg) if LENGTH_MATCH else bg       # as VoiceVerifier.fit
        m = make(kind).fit(mine + neg, [1] * len(tr) + [0] * len(neg))
        s_p += list(m.predict([person[i] for i in te]))
        s_o.append(m.predict(other))
        s_g.append(m.predict(generic))
        for name, texts in (others or {}).items():
            s_all[name].append(m.predict(texts))
    s_o, s_g = np.mean(s_o, 0), np.mean(s_g, 0)
    row = {"vs_generic": auc(s_p, s_g), "vs_other": auc(s_p, s_o)}
    if s_all:
        worst = {name: auc(s_p, np.mean(s, 0)) for name, s in s_all.items()}
        row["worst_other"] = min(worst.values())
        row["worst_name"] = min(worst, key=worst.get)
        row["pairs"] = worst
    topics = list(by_topic)
    if topics and by_topic and len(topics) == 2:
        a, b = topics
        neg = V.length_matched(by_topic[a], bg) if LENGTH_MATCH else bg
        m = make(kind).fit(by_topic[a] + neg, [1] * len(by_topic[a]) + [0] * len(neg))
        row["topic_sway"] = auc(m.predict(by_topic[b]), m.predict(other_topic(a)))
    return row


OTHER_TOPIC: dict = {}
LENGTH_MATCH = True


def other_topic(t):
    return OTHER_TOPIC[t]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minilm", action="store_true", help="also the MiniLM content baseline")
    ap.add_argument("--kind", choices=list(V.FEATURE_SETS) + ["delta"],
                    help="only this feature set (default: all)")
    ap.add_argument("--no-length-match", action="store_true", help="fit on the whole background "
                    "(before: background texts far shorter than the person's were kept)")
    ap.add_argument("--background-first", type=int, metavar="N", help="only the first N bundled "
                    "background texts (267: the background before session 11's human voices)")
    args = ap.parse_args()
    global LENGTH_MATCH
    LENGTH_MATCH = not args.no_length_match
    bg = V.background_texts()[:args.background_first]
    kinds = list(V.FEATURE_SETS) + ["delta"]
    rows = {}
    kinds = [k for k in kinds if not args.kind or k == args.kind]
    for name, person, other, generic, by_topic, other_by, others in personas():
        OTHER_TOPIC.clear()
        if other_by:
            OTHER_TOPIC.update(other_by)
        else:
            by_topic = {}
        for kind in kinds:
            t0 = time.perf_counter()
            rows[(name, kind)] = {**evaluate(kind, person, other, generic, by_topic, bg, others),
                                  "s": time.perf_counter() - t0}
            print(name, kind, {k: v if isinstance(v, str) else round(v, 3)
                               for k, v in rows[(name, kind)].items() if k != "pairs"},
                  file=sys.stderr)
        t0 = time.perf_counter()
        ho = V.held_out_auc(person, bg)
        print(name, "held_out", round(ho["auc"], 3), ho["curve"], ho["warning"],
              f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
        if args.minilm and other_by:
            from mindprint.measures.embed import embed

            # content_similarity's way: cosine to the person's answer paired with each text
            # (the other person: the same question; the person: a question of the other topic)
            for a, b in (list(by_topic), list(by_topic)[::-1]):
                ref = embed(by_topic[a])
                sim = lambda t: (embed(t) * ref).sum(1)  # noqa: E731
                print(name, f"minilm topic_sway fit={a}", round(auc(sim(by_topic[b]), sim(other_by[a])), 3),
                      file=sys.stderr)
    print("| persona | features | AUC vs generic | AUC vs other person | worst other person | "
          "topic sway AUC | s |")
    print("|---|---|---|---|---|---|---|")
    for (name, kind), r in rows.items():
        ts = f"{r['topic_sway']:.3f}" if "topic_sway" in r else "–"
        wo = f"{r['worst_other']:.3f} ({r['worst_name']})" if "worst_other" in r else "–"
        print(f"| {name} | {kind} | {r['vs_generic']:.3f} | {r['vs_other']:.3f} | {wo} | {ts} "
              f"| {r['s']:.1f} |")
    # every ordered pair of fixture personas (the person's held-out answers vs the other's)
    for kind in kinds:
        pairs = {(n, m): v for (n, k), r in rows.items() if k == kind
                 for m, v in r.get("pairs", {}).items()}
        if not pairs:
            continue
        seen = {k: v for k, v in pairs.items() if not set(k) & set(HELD_OUT)}
        held = {k: v for k, v in pairs.items() if set(k) & set(HELD_OUT)}
        for label, part in (("persona pairs", seen), ("pairs with a held-out persona", held)):
            low = sorted((v, k) for k, v in part.items() if v < 0.9)
            print(f"\n{kind}, {label}: {len(part)}, min {min(part.values()):.3f}, mean "
                  f"{np.mean(list(part.values())):.3f}, below 0.9: {len(low)}"
                  + "".join(f"; {a}→{b} {v:.3f}" for v, (a, b) in low))


if __name__ == "__main__":
    main()
