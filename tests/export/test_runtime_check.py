"""``make verify-llamacpp``'s checker without llama.cpp: what counts as template text leaking into an
answer, and a clear exit when llama-cpp-python is not installed. (With it installed, the target
itself runs the quickstart's q4_k_m file in llama.cpp.)"""

from __future__ import annotations

import pytest

from mindprint.export import llamacpp, runtime_check
from mindprint.export.gguf import _pick_quantizer

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]


def test_leaks():
    assert runtime_check.leaks("Zoom out. Patience is a position.", SPECIALS) == []
    assert runtime_check.leaks("Zoom out.<|im_end|>\n<|im_start|>user\nmore", SPECIALS) == \
        ["<|im_start|>", "<|im_end|>"]
    # decoded without its special tokens, a next turn still shows as a role header line
    assert runtime_check.leaks("Zoom out.\nuser\nmore", SPECIALS) == ["user"]
    assert runtime_check.leaks("Sure.\nassistant\nAnd then", SPECIALS) == ["assistant"]
    # the words on their own, inside prose, are not template text
    assert runtime_check.leaks("The user asked the assistant about the system.", SPECIALS) == []


@pytest.mark.skipif(llamacpp.available(), reason="optional: llama-cpp-python is installed (this checks the path "
                    "without it)")
def test_without_llama_cpp(capsys, tmp_path):
    assert runtime_check.main([str(tmp_path / "run")]) == 1
    assert llamacpp.OPTIONAL in capsys.readouterr().out
    assert _pick_quantizer("auto", "q4_k_m") == "numpy"
    assert _pick_quantizer("auto", "f16") == "numpy"
    with pytest.raises(Exception, match="llama-cpp-python"):
        llamacpp.quantize_file(tmp_path / "a.gguf", tmp_path / "b.gguf", "q4_k_m")
