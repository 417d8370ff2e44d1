"""The voice score: a per-person verifier that tells the person's answers from other voices by
*how* they write, not *what* they write about.

``voice_fidelity`` (now ``content_similarity``, :mod:`.embed`) compares MiniLM sentence
embeddings, which encode content: two people saying the same thing score high, the same person
on another topic scores low. Here a classifier is fitted on the person's own answers (label 1)
against a background of not-the-person text (label 0): the bundled generic background
(``data/background.jsonl``: assistant-like, formal, casual, technical, terse, chatty answers
of invented people on many topics), plus, when given, other text such as the base model's own
answers.

Features (see :mod:`.features`): TF-IDF of character 2–5-grams of the text with content words
masked to their casing shape, plus a standardized dense vector of function-word, punctuation,
rhythm, casing, opener/closer and emoji rates. Classifier: logistic regression, Platt-calibrated
on out-of-fold decision values with both classes weighted equally, so a score reads as a
probability and 0.5 means "as likely the person as not" whatever the background's size.
benchmarks/RESULTS.md ("Voice score") has the measurements behind these choices: masked char
n-grams + dense features beat raw char n-grams on the topic-sway check, and logistic
regression beat Cosine Delta on held-out AUC. scikit-learn (the ``eval`` extra) supplies the
vectorizer, scaler, classifier and folds: a well-kept library, and a fit takes about a second
on a few hundred texts. Background texts far shorter than the person's answers are left out of
a fit (:func:`length_matched`): against them the classifier learns length, not voice.

Numbers:

* ``voice_match``: mean probability that an answer is the person's (0–1);
* ``voice_attribution``: share of answers with probability > 0.5;
* ``verifier_auc``: the verifier's own ROC AUC on the person's and the background's texts in
  k folds it was not fitted on (how well it can tell this voice at all), with a learning curve
  over the share of the person's texts used and a warning when the data is too little.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.feature_extraction.text import TfidfVectorizer

from ..errors import DataError
from .features import dense_matrix, mask_content

MIN_PERSON = 8          # fewer of the person's texts than this cannot train a verifier
FEW_PERSON = 40         # below this the held-out AUC is uncertain: say so
MAX_PERSON = 2000       # more of the person's texts are sampled down (seeded) to keep fits fast
CURVE = (0.25, 0.5, 1.0)
# background texts shorter than this share of the person's median answer (in words) are left out
# of the fit: "Need it by Friday." against 30-word answers teaches length, not voice (RESULTS.md:
# 9 -> 6 of 30 persona pairs below AUC 0.9); if that would leave under half the background, all
# of it is kept (a person who writes two words a time is judged against short texts too)
BG_MIN_SHARE = 0.25
DENSE_WEIGHT = 0.05      # RESULTS.md: 0.05 measured best of 0.05–1
C = 0.3                  # inverse regularization; 0.3 measured best of 0.3–100
FEATURE_SETS = ("masked+dense", "masked", "raw", "raw+dense", "dense")


def background_texts() -> list[str]:
    """The bundled not-the-person answers (``data/background.jsonl``, one ``{"text"}`` a line)."""
    raw = resources.files("mindprint.measures").joinpath("data/background.jsonl").read_text("utf-8")
    return [json.loads(ln)["text"] for ln in raw.splitlines() if ln.strip()]


def _features(kind: str) -> FeatureUnion:
    parts = []
    if kind.startswith(("masked", "raw")):
        parts.append(("chars", TfidfVectorizer(
            analyzer="char", ngram_range=(2, 5), sublinear_tf=True, min_df=2, lowercase=False,
            preprocessor=mask_content if kind.startswith("masked") else None)))
    if kind.endswith("dense"):
        parts.append(("dense", make_pipeline(FunctionTransformer(dense_matrix), StandardScaler())))
    # the dense block has ~200 unit-variance columns against one unit-length TF-IDF row: weigh it
    # down so neither view drowns the other
    weights = {"chars": 1.0, "dense": DENSE_WEIGHT if len(parts) > 1 else 1.0}
    return FeatureUnion(parts, transformer_weights={n: weights[n] for n, _ in parts})


def _model(kind: str, c: float = C):
    return make_pipeline(_features(kind), LogisticRegression(
        C=c, class_weight="balanced", max_iter=2000, solver="liblinear"))


@dataclass
class VoiceVerifier:
    """Fitted on ``person`` texts against ``background``; :meth:`predict` gives P(person)."""

    person: list[str]
    background: list[str]
    features: str = "masked+dense"
    model: object = field(default=None, repr=False)
    given: int = 0          # the person's texts given; more than len(person) when sampled down
    # texts with fewer words than this are outside what the verifier can judge: the background it
    # was fitted against had none that short (:func:`length_matched`), so a bare catchphrase
    # ("Zoom out. Patience.") gets P ~ 1; 0 when the whole background was kept
    min_words: float = 0.0

    @classmethod
    def fit(cls, person: list[str], background: list[str] | None = None, *,
            extra_background: list[str] = (), features: str = "masked+dense") -> VoiceVerifier:
        person = [t for t in person if t and t.strip()]
        if len(person) < MIN_PERSON:
            raise DataError(f"the voice verifier needs at least {MIN_PERSON} of the person's "
                            f"answers; got {len(person)}")
        if features not in FEATURE_SETS:
            raise ValueError(f"features: one of {', '.join(FEATURE_SETS)}")
        given = len(person)
        if given > MAX_PERSON:
            keep = np.sort(np.random.default_rng(0).permutation(given)[:MAX_PERSON])
            person = [person[i] for i in keep]
        every = list(background_texts() if background is None else background) + list(extra_background)
        bg = length_matched(person, every)
        texts, y = person + bg, np.array([1] * len(person) + [0] * len(bg))
        feats = _features(features).fit(texts)
        # Platt scaling on out-of-fold decision values, both classes weighted equally: the
        # regularized logistic regression ranks well but squeezes its probabilities towards 0.5
        weight = np.where(y == 1, len(y) / (2 * len(person)), len(y) / (2 * len(bg)))
        clf = CalibratedClassifierCV(LogisticRegression(C=C, max_iter=2000, solver="liblinear"),
                                     method="sigmoid", cv=min(5, len(person)), ensemble=False)
        clf.fit(feats.transform(texts), y, sample_weight=weight)
        return cls(person, bg, features, (feats, clf), given,
                   length_floor(person) if len(bg) < len(every) else 0.0)

    def predict(self, texts: list[str]) -> np.ndarray:
        """P(text is the person's) for each text, in order (``[N]`` float)."""
        if not texts:
            return np.zeros(0)
        feats, clf = self.model
        return clf.predict_proba(feats.transform(list(texts)))[:, 1]

    def score(self, texts: list[str]) -> dict:
        """``voice_match`` (mean P) and ``voice_attribution`` (share with P > 0.5)."""
        p = self.predict(texts)
        if not len(p):
            return {"voice_match": None, "voice_attribution": None, "n": 0}
        return {"voice_match": float(p.mean()), "voice_attribution": float((p > 0.5).mean()),
                "n": int(len(p))}

    def held_out(self, k: int = 5, seed: int = 0) -> dict:
        """Out-of-fold ROC AUC on this verifier's own data, and a learning curve (see
        :func:`held_out_auc`); ``sampled`` says when the person's texts were sampled down."""
        res = held_out_auc(self.person, self.background, features=self.features, k=k, seed=seed)
        res["sampled"] = (f"fitted on a seeded sample of {len(self.person)} of the person's "
                          f"{self.given} texts (speed)") if self.given > len(self.person) else None
        return res


def _words(text: str) -> int:
    return len(text.split())


def length_floor(person: list[str]) -> float:
    """:data:`BG_MIN_SHARE` of the person's median answer length, in words."""
    return BG_MIN_SHARE * float(np.median([_words(t) for t in person]))


def length_matched(person: list[str], background: list[str]) -> list[str]:
    """``background`` without texts under :func:`length_floor` words (all of it when that would
    drop half or more)."""
    low = length_floor(person)
    kept = [t for t in background if _words(t) >= low]
    return kept if 2 * len(kept) > len(background) else list(background)


def held_out_auc(person: list[str], background: list[str], *, features: str = "masked+dense",
                 k: int = 5, seed: int = 0) -> dict:
    """ROC AUC of person (1) vs background (0) texts, each scored by a model fitted on the other
    folds. ``curve`` repeats it with only a share of the person's training texts per fold (the
    background is kept whole); a rise at the end means more of the person's data would help.
    ``warning`` is None when the data looks sufficient."""
    texts = list(person) + list(background)
    y = np.array([1] * len(person) + [0] * len(background))
    k = max(2, min(k, len(person), len(background)))
    folds = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(texts, y))
    rng = np.random.default_rng(seed)
    curve = {}
    for frac in CURVE:
        oof = np.zeros(len(texts))
        for train, test in folds:
            pos = train[y[train] == 1]
            keep = rng.permutation(pos)[:max(2, int(round(frac * len(pos))))]
            tr = np.concatenate([keep, train[y[train] == 0]])
            m = _model(features).fit([texts[i] for i in tr], y[tr])
            oof[test] = m.predict_proba([texts[i] for i in test])[:, 1]
        curve[frac] = float(roc_auc_score(y, oof))
    auc = curve[1.0]
    return {"auc": auc, "k": k, "n_person": len(person), "n_background": len(background),
            "curve": {f"{int(f * 100)}%": v for f, v in curve.items()},
            "warning": _warning(len(person), auc, curve)}


def _warning(n: int, auc: float, curve: dict) -> str | None:
    gain = curve[1.0] - curve[0.5]
    notes = []
    if n < FEW_PERSON:
        notes.append(f"only {n} of the person's answers: the held-out AUC is uncertain "
                     f"(at least {FEW_PERSON}, better 100+, would help)")
    if gain > 0.02:
        notes.append(f"the held-out AUC still rose from {curve[0.5]:.3f} (half the person's "
                     f"answers) to {auc:.3f} (all): about {2 * n} answers would likely do better")
    if auc < 0.8:
        notes.append(f"held-out AUC {auc:.3f} < 0.8: the verifier cannot reliably tell this voice "
                     "from others, so voice_match means little")
    return "; ".join(notes) or None
