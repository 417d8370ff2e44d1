"""Voice during training (``eval.every``): a few held-out prompts answered greedily by the model
being trained; one ``metrics.jsonl`` row per probe with their ``content_similarity`` to the
reference answers and, when
``data.train`` holds at least :data:`~mindprint.measures.voice.MIN_PERSON` of the person's answers,
``voice_match``: the mean P(the person's) from the voice verifier fitted on them once.

The probe runs in eval mode (no LoRA dropout) and leaves the RNG state as it found it, so a run
with probes trains exactly like one without.
"""

from __future__ import annotations

from statistics import mean

import torch

from ..errors import ConfigError, DataError
from ..measures.voice import MIN_PERSON, VoiceVerifier
from ..measures.voice_data import person_texts
from .data import load_prompts
from .metrics import answer, content_similarity


class VoiceProbe:
    def __init__(self, cfg, tok):
        e = cfg.eval
        paths = list(e.prompts) or list(cfg.data.eval)
        if not paths:
            raise ConfigError("eval.every needs held-out prompts with reference answers: set "
                              "eval.prompts or data.eval")
        items = load_prompts(paths, system_prompt=cfg.data.system_prompt)
        self.items = [it for it in items if it.reference][:e.max_prompts]
        if not self.items:
            raise ConfigError(f"eval.every: {', '.join(map(str, paths))} holds no prompt with a "
                              "reference answer")
        self.cfg, self.tok, self.every = e, tok, e.every
        self.verifier, self.voice_note = None, None
        try:
            mine, _ = person_texts(cfg.data.train) if cfg.data.train else ([], [])
        except DataError as err:     # e.g. a declared format auto-detection cannot read
            mine, self.voice_note = [], f"data.train not read for the voice verifier: {err}"
        if len(mine) >= MIN_PERSON:
            self.verifier = VoiceVerifier.fit(mine)
        elif self.voice_note is None:
            self.voice_note = (f"data.train holds {len(mine)} of the person's answers; the voice "
                               f"verifier needs {MIN_PERSON}: no voice_match")

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def __call__(self, model) -> dict:
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng():
                gen = answer(model, self.tok, self.items, max_new_tokens=self.cfg.max_new_tokens,
                             temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                             seed=self.cfg.seed, batch_size=self.cfg.batch_size)
        finally:
            model.train(was_training)
        fid, _ = content_similarity(gen["answers"], [it.reference for it in self.items])
        row = {"content_similarity": fid,
               "voice_answer_words": mean(len(a.split()) for a in gen["answers"]),
               "voice_prompts": len(self.items)}
        if self.verifier is not None:
            row["voice_match"] = self.verifier.score(gen["answers"])["voice_match"]
        elif self.voice_note:
            row["voice_match_skipped"] = self.voice_note
        return row
