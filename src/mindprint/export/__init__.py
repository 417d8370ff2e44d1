"""Taking a result elsewhere, verified: merged Hugging Face checkpoints and GGUF files.

Every writer here checks its output against the model it came from on fixed probe inputs
(:mod:`.probes`) before the output appears under its final name, and writes nothing otherwise.
"""
