"""Does the model sound like the person now? Numbers for base and tuned, side by side.

* :mod:`.data`     held-out sets: prompts with reference answers, chat, preference pairs
* :mod:`.embed`    all-MiniLM-L6-v2 sentence embeddings (shipped in a PyPI package, offline)
* :mod:`.style`    markdown use, banned phrases, length — pure functions of text
* :mod:`.metrics`  voice fidelity, preference accuracy, perplexity on a loaded model
* :mod:`.runner`   ``mindprint eval``: every metric for base and tuned → report.json + report.html
* :mod:`.report`   the HTML report and its plots
* :mod:`.compare`  ``mindprint compare``: answers of base and adapters side by side
* :mod:`.probe`    voice fidelity during training (``eval.every``)
"""
