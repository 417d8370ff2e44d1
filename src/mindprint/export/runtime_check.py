"""``make verify-llamacpp``: the quickstart's q4_k_m export run in llama.cpp itself.

``python -m mindprint.export.runtime_check [RUN_DIR]`` (default ``runs/quickstart``, trained
first with ``examples/quickstart.yaml`` when it has no adapter):

1. ``mindprint export ollama --quant q4_k_m`` into ``RUN_DIR/ollama`` (llama.cpp's quantizer,
   since llama-cpp-python is installed) — the verified GGUF, Modelfile and export.json;
2. the same file type written by the NumPy quantizer, compared tensor by tensor with llama.cpp's
   bytes;
3. greedy answers to the run's held-out prompts from llama.cpp with the chat template embedded in
   the file: each must stop at end of turn (llama.cpp's finish reason "stop") or else run to the
   token limit inside a repetition loop (:func:`mindprint.measures.diversity.loops`: the model
   never said end of turn; a short-trained quickstart loops on some prompts in every runtime),
   at least one must stop, none may hold template text (special tokens, role headers), and
   their voice_match is set beside the adapter model's and the base model's from export.json.

Prints a Markdown block for benchmarks/RESULTS.md; exits 1 when a check fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..measures.diversity import loops
from ..measures.voice import VoiceVerifier
from ..measures.voice_data import person_texts
from . import llamacpp
from .gguf import run_sources
from .ollama import export_ollama
from .verify import held_out_prompts

ROLE_HEADERS = ("\nuser\n", "\nassistant\n", "\nsystem\n")
MAX_TOKENS = 96          # per llama.cpp answer; the persona's answers are ~60-80 tokens


def _tensor_bytes(path: Path) -> dict:
    import gguf

    return {t.name: (int(t.tensor_type), np.asarray(t.data).tobytes())
            for t in gguf.GGUFReader(str(path)).tensors}


def leaks(text: str, specials: list[str]) -> list[str]:
    """Template text found in an answer: special tokens or a role header line."""
    found = [s for s in specials if s and s in text]
    found += [h.strip() for h in ROLE_HEADERS if h in f"\n{text}"]
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run = Path(argv[0] if argv else "runs/quickstart")
    if not llamacpp.available():
        print(f"{llamacpp.OPTIONAL}: run `make verify-llamacpp` (it builds it)")
        return 1
    if not (run / "adapter").is_dir():
        subprocess.run([sys.executable, "-m", "mindprint.cli", "train", "examples/quickstart.yaml",
                        "--output-dir", str(run)], check=True)
    adapter = str(run / "adapter")
    out = run / "ollama"
    info = export_ollama(adapter, str(out), quant="q4_k_m", quantizer="llama.cpp",
                         overwrite=True, max_prompts=8, max_new_tokens=64, log=print)
    gguf_path = Path(info["gguf"])
    numpy_path = run / "numpy-q4_k_m.gguf"
    from .gguf import export_gguf

    export_gguf(str(numpy_path), adapter=adapter, quant="q4_k_m", quantizer="numpy",
                overwrite=True, max_prompts=0)
    a, b = _tensor_bytes(gguf_path), _tensor_bytes(numpy_path)
    differ = sorted(n for n in a if a[n] != b.get(n))
    src = run_sources(adapter)
    prompts = held_out_prompts(src["prompts"], system_prompt=src.get("system_prompt"), limit=8)
    answers = llamacpp.chat(gguf_path, prompts, max_tokens=MAX_TOKENS)
    from ..backends.common import load_tokenizer
    from ..backends.torch.adapters import base_model_of
    from ..models import resolve

    tok = load_tokenizer(resolve(base_model_of(adapter)[0]).path)
    specials = sorted(set(tok.all_special_tokens) | {t.content for t in
                                                     tok.added_tokens_decoder.values()})
    stopped = sum(a["finish_reason"] == "stop" for a in answers)
    # an answer that runs to the token limit inside a repetition loop never reached an end of
    # turn to stop at: the model's habit (loop_share in mindprint eval), not the file's template
    # or stop tokens; one that runs long without looping is a failure
    long = [i for i, a in enumerate(answers) if a["finish_reason"] != "stop"]
    looping = [i for i in long if loops(answers[i]["text"])]
    leaked = {i: leaks(a["text"], specials) for i, a in enumerate(answers)}
    leaked = {i: v for i, v in leaked.items() if v}
    ver = VoiceVerifier.fit(person_texts(src["person"])[0])
    lc_voice = ver.score([a["text"] for a in answers])["voice_match"]
    v = info["verification"]["voice"]
    ok = not differ and stopped > 0 and len(looping) == len(long) and not leaked
    print("\n### llama.cpp runtime check (make verify-llamacpp)\n")
    print(f"- file: `{gguf_path.name}` q4_k_m, {info['bytes'] / 2**20:.1f} MiB, tensors "
          f"{info['written']['tensors']}, quantized by llama.cpp "
          f"(llama-cpp-python {__import__('llama_cpp').__version__})")
    print(f"- NumPy quantizer vs llama.cpp: {len(a) - len(differ)}/{len(a)} tensors byte-identical"
          + (f"; differ: {', '.join(differ[:6])}" if differ else ""))
    s = info["verification"]["against_source"]
    print(f"- against the adapter model (transformers reading the file): top-1 agreement "
          f"{s['top1_agreement']:.3f}, max |Δlogit| {s['max_abs_diff']:.3g}")
    print(f"- llama.cpp, embedded chat template, greedy, {len(answers)} held-out prompts: "
          f"{stopped}/{len(answers)} stopped at end of turn ({len(looping)} ran to the "
          f"{MAX_TOKENS}-token limit inside a repetition loop, {len(long) - len(looping)} "
          f"without one), {len(answers) - len(leaked)}/{len(answers)} without template text")
    print(f"- voice_match: llama.cpp answers {lc_voice:.3f}; transformers on the file "
          f"{v.get('file_voice_match', float('nan')):.3f}; adapter model "
          f"{v.get('adapter_voice_match', float('nan')):.3f}; base model "
          f"{v.get('base_voice_match', float('nan')):.3f}")
    for p, a in list(zip(prompts, answers))[:3]:
        print(f"  - Q: {p[-1]['content'][:70]!r} → {a['text'][:110]!r} ({a['finish_reason']})")
    print(f"- result: {'PASS' if ok else 'FAIL'}")
    (run / "llamacpp-check.json").write_text(json.dumps(
        {"differ": differ, "answers": answers, "stopped": stopped, "looping": looping,
         "leaked": leaked,
         "llamacpp_voice_match": lc_voice, "export": info}, indent=2, ensure_ascii=False))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
