"""The checks every GGUF export runs before its file is renamed into place, and what they mean.

1. **The file holds the model** (always a refusal when it fails: the file is wrong). The file is
   read back through transformers' GGUF loader; its tokenizer must encode the probe texts
   (:mod:`.probes`) to the same ids and carry the same chat template, and its logits must equal
   those of the source model with its matrices rounded exactly as the file stores them,
   max |Δlogit| ≤ :data:`FILE_TOLERANCE` (measured 0 to 1e-5: the same weights).
2. **What quantization costs** against the unrounded adapter model on the probes: max |Δlogit|
   and top-1 agreement over the natural-text probe tokens. Below :data:`MIN_TOP1` a WARNING.
3. **The voice survives**: greedy answers to held-out prompts from the file (dequantized into
   transformers) and from the adapter model are scored by the voice verifier
   (:mod:`mindprint.measures.voice`, fitted on the person's training texts): ``voice_match``,
   the mean P(the person wrote it). A WARNING when the file's score is more than
   :data:`VOICE_DROP` below the adapter's.

Warnings do not stop the export; ``--strict`` turns them into a refusal (nothing written).
Why warn rather than refuse: 4-bit weights move every logit, and a few top-1 flips among
near-tied tokens do not make a model stop sounding like its person; refusing a q8_0 file at
top-1 0.964 (as this export once did) gave the user nothing. The thresholds:

* ``MIN_TOP1`` sits about 0.05 (one probe token in twenty) below what each type measures on the
  bundled model with the quickstart adapter (benchmarks/RESULTS.md, "GGUF quantization": f16
  1.000, bf16 1.000, q8_0 0.985, q6_k 0.938, q5_k_m 0.805, q4_k_m 0.872, q4_0 0.708), never
  higher for a smaller type, so the warning fires on a model that suffers unusually, not on
  ordinary rounding. (The bundled model's weights are a dequantized Q4_1 file, so re-quantizing
  them does not order by bit width: q5_k_m's Q5_1 grid fits them worse than q4_k_m's Q5_0.)
* ``VOICE_DROP`` 0.10: voice_match is a mean probability over a handful of answers; on the
  bundled model the files of every type scored within 0.005 of the adapter model or above it
  (0.867 adapter; f16 0.867 … q5_k_m 0.997) while the base model scored 0.001–0.015: an answer
  in another voice moves it by tenths, rounding by hundredths.
"""

from __future__ import annotations

from pathlib import Path

from ..backends.torch.generate import generate
from ..data.jsonl import load_many
from ..errors import DataError
from ..measures.voice import MIN_PERSON, VoiceVerifier
from ..measures.voice_data import person_texts
from .merge import VerificationError
from .probes import PROBE_CHATS, compare_logits

FILE_TOLERANCE = 1e-2
MIN_TOP1 = {"f16": 0.98, "bf16": 0.95, "q8_0": 0.93, "q6_k": 0.88, "q5_k_m": 0.75,
            "q4_k_m": 0.75, "q4_0": 0.65}
VOICE_DROP = 0.10
MAX_PROMPTS = 4          # held-out prompts answered by the file and the adapter model
MAX_NEW_TOKENS = 40


def check_tokenizer(source_tok, file_tok) -> None:
    for chat in PROBE_CHATS:
        text = source_tok.apply_chat_template(chat, tokenize=False)
        a = source_tok(text, add_special_tokens=False)["input_ids"]
        b = file_tok(text, add_special_tokens=False)["input_ids"]
        if a != b:
            raise VerificationError(f"the GGUF tokenizer encodes a probe text differently "
                                    f"({len(a)} vs {len(b)} tokens); nothing written")
    if (getattr(file_tok, "chat_template", None) or None) != (source_tok.chat_template or None):
        raise VerificationError("the GGUF file's chat template differs from the model's; "
                                "nothing written")


def check_logits(file_logits, source_logits, rounded_logits, batch, quant: str, *,
                 min_top1: float | None = None) -> tuple[dict, list]:
    """(report, warnings): the file against the rounded source (a failure raises) and against
    the unrounded source (below ``min_top1``, default :data:`MIN_TOP1` of ``quant``, a
    warning)."""
    exact = compare_logits(file_logits, rounded_logits, batch)
    if not exact["max_abs_diff"] <= FILE_TOLERANCE:
        raise VerificationError(
            f"GGUF verification failed ({quant}): the file's logits differ by "
            f"{exact['max_abs_diff']:.3g} from the source model rounded to {quant} (tolerance "
            f"{FILE_TOLERANCE:g}): the file does not hold the model; nothing written")
    fid = compare_logits(file_logits, source_logits, batch)
    need = MIN_TOP1[quant] if min_top1 is None else min_top1
    warnings = []
    if not fid["top1_agreement"] >= need:
        warnings.append(f"{quant}: top-1 agreement with the adapter model is "
                        f"{fid['top1_agreement']:.3f} on the probe tokens (expected ≥ {need:g}); "
                        f"max |Δlogit| {fid['max_abs_diff']:.3g}")
    return {"against_rounded_source": {**exact, "tolerance": FILE_TOLERANCE},
            "against_source": {**fid, "min_top1_agreement": need}}, warnings


# -- voice -------------------------------------------------------------------------------------


def _prompt_of(rec) -> list[dict] | None:
    """The conversation up to the answer, for the record kinds held-out files hold."""
    kind = type(rec).__name__
    if kind == "ChatRecord":
        msgs = [m.as_dict() for m in rec.messages]
        return msgs[:-1]
    if kind in ("PromptRecord", "PreferenceRecord"):
        return [m.as_dict() for m in rec.prompt]
    return None


def held_out_prompts(paths, *, system_prompt: str | None, limit: int) -> list[list[dict]]:
    res = load_many(list(paths), None, system_prompt=system_prompt,
                    expect=("prompt", "chat", "alpaca", "preference"))
    out = [p for p in map(_prompt_of, res.records) if p and p[-1]["role"] == "user"]
    return out[:limit]


class VoiceCheck:
    """Held-out prompts and a verifier fitted on the person's texts, or ``note`` saying why the
    voice is not checked."""

    def __init__(self, *, prompts=(), person=(), system_prompt: str | None = None,
                 max_prompts: int = MAX_PROMPTS, max_new_tokens: int = MAX_NEW_TOKENS):
        self.prompts, self.verifier, self.note = [], None, None
        self.max_new_tokens = max_new_tokens
        if max_prompts <= 0:
            self.note = "voice check off (--voice-prompts 0)"
            return
        missing = [str(p) for p in list(prompts) + list(person) if not Path(p).is_file()]
        if not prompts or not person:
            self.note = ("no held-out prompts" if not prompts else "no training texts of the "
                         "person") + " known for this export (a run directory's config, or "\
                         "--prompts/--person): voice not checked"
            return
        if missing:
            self.note = f"{missing[0]}: not found: voice not checked"
            return
        try:
            self.prompts = held_out_prompts(prompts, system_prompt=system_prompt,
                                            limit=max_prompts)
            mine, _ = person_texts(person)
        except DataError as e:
            self.note = f"voice not checked: {e}"
            return
        if not self.prompts:
            self.note = f"{', '.join(map(str, prompts))}: no prompt ending in a user turn"
        elif len(mine) < MIN_PERSON:
            self.note = (f"the person's texts hold {len(mine)} answers; the voice verifier needs "
                         f"{MIN_PERSON}: voice not checked")
        else:
            self.verifier = VoiceVerifier.fit(mine)

    @property
    def active(self) -> bool:
        return self.verifier is not None

    def answers(self, model, tok) -> list[str]:
        return generate(model, tok, self.prompts, max_new_tokens=self.max_new_tokens)

    def compare(self, adapter_answers: list[str], file_answers: list[str],
                base_answers: list[str] | None = None, *,
                remedy: str = "a larger type (q5_k_m, q6_k, q8_0) may keep it") -> tuple[dict, list]:
        """(report, warnings); ``base_answers`` (the model without the adapter) show how much
        voice the adapter added, for scale; ``remedy`` ends the warning."""
        a = self.verifier.score(adapter_answers)["voice_match"]
        f = self.verifier.score(file_answers)["voice_match"]
        b = self.verifier.score(base_answers)["voice_match"] if base_answers else None
        same = sum(x == y for x, y in zip(adapter_answers, file_answers))
        rep = {"adapter_voice_match": a, "file_voice_match": f, "base_voice_match": b,
               "drop": a - f,
               "max_drop": VOICE_DROP, "prompts": len(self.prompts),
               "identical_answers": same, "max_new_tokens": self.max_new_tokens,
               "answers": [{"prompt": p[-1]["content"], "adapter": x, "file": y}
                           for p, x, y in zip(self.prompts, adapter_answers, file_answers)]}
        warn = []
        if a - f > VOICE_DROP:
            warn.append(f"the voice weakened: voice_match {f:.3f} from the file against "
                        f"{a:.3f} from the adapter model (drop {a - f:.3f} > {VOICE_DROP:g}); "
                        f"{remedy}")
        return rep, warn
