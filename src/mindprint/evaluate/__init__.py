"""Does the model sound like the person now? Numbers for base and tuned, side by side.

The text measures it shares with the GRPO rewards (style, MiniLM embeddings) live in
:mod:`mindprint.measures`.

* :mod:`.data`     held-out sets: prompts with reference answers, chat, preference pairs
* :mod:`.metrics`  voice fidelity, preference accuracy, perplexity on a loaded model
* :mod:`.runner`   ``mindprint eval``: every metric for base and tuned → report.json + report.html
* :mod:`.summary`  the report's summary rows, terminal table and JSON text (runner and report share it)
* :mod:`.report`   the HTML report and its plots
* :mod:`.compare`  ``mindprint compare``: answers of base and adapters side by side
* :mod:`.probe`    voice fidelity during training (``eval.every``)
"""
