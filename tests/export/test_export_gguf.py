"""GGUF export on tiny models: written with the gguf package (NumPy quantizers), read back through
transformers; warnings and --strict; the k-quant mix in a written file."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import PERSONA

from mindprint.export import gguf as G
from mindprint.export import gguf_write as W
from mindprint.export import verify as V
from mindprint.export.merge import VerificationError
from mindprint.export.probes import compare_logits, probe_batch, probe_logits


@pytest.fixture(scope="module")
def f16_file(tiny_adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf"
    # held-out prompts and the person's texts given explicitly (the tiny adapter has no run
    # config): the voice check runs, on short answers
    return out, G.export_gguf(str(out), adapter=tiny_adapter, quant="f16",
                              prompts=[str(PERSONA / "persona_eval.jsonl")],
                              person=[str(PERSONA / "persona_train.jsonl")], max_prompts=3,
                              max_new_tokens=8)


def test_f16_round_trip(f16_file, tiny_adapter, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, info = f16_file
    assert out.is_file() and info["bytes"] == out.stat().st_size
    v = info["verification"]
    assert v["against_rounded_source"]["max_abs_diff"] <= 1e-4      # the file holds the model
    assert v["against_source"]["top1_agreement"] == 1.0
    assert info["written"]["tensors"]["F16"] == 2 * 7 + 1            # 7 matrices a block + embedding
    voice = info["verification"]["voice"]
    assert voice["prompts"] == 3 and len(voice["answers"]) == 3
    assert 0 <= voice["base_voice_match"] <= 1 and 0 <= voice["file_voice_match"] <= 1
    # f16 rounding barely moves a greedy answer; any gap stays far below the warning threshold
    assert abs(voice["drop"]) <= V.VOICE_DROP and not info["warnings"]
    # independently: transformers' GGUF loader gives the adapter model's logits (f16 ≤ 1e-2)
    model, tok = G.load_gguf(out)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    batch = probe_batch(tok)
    want = probe_logits(PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_adapter), batch)
    assert compare_logits(probe_logits(model, batch), want, batch)["max_abs_diff"] <= 1e-2
    text = tok.apply_chat_template([{"role": "user", "content": "Zoom out, 2024?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")


def test_q4_0_warns_and_strict_refuses(tiny_model_dir, f16_file, tmp_path, monkeypatch):
    """A quantized file whose top-1 agreement is below the type's level is written with a
    WARNING in its report; ``--strict`` refuses it and writes nothing. (A random 2-layer model's
    logits are near-tied everywhere, so the level is raised out of reach to make it happen.)"""
    monkeypatch.setitem(V.MIN_TOP1, "q4_0", 1.01)
    with pytest.raises(VerificationError, match="--strict: q4_0: top-1 agreement"):
        G.export_gguf(str(tmp_path / "refused.gguf"), model=tiny_model_dir, quant="q4_0",
                      strict=True)
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / "tiny-q4_0.gguf"
    info = G.export_gguf(str(out), model=tiny_model_dir, quant="q4_0", quantizer="numpy")
    # 7 matrices a layer + the tied embedding, which q4_0 gives the head's type (Q6_K wanted;
    # rows of 64 are not whole 256-blocks: Q8_0), as llama.cpp does
    assert info["written"]["tensors"] == {"F32": 5, "Q4_0": 14, "Q8_0": 1}
    assert info["verification"]["against_rounded_source"]["max_abs_diff"] <= 1e-4
    rep = json.loads((tmp_path / "tiny-q4_0.export.json").read_text())
    assert rep["quant"] == "q4_0" and rep["bytes"] == out.stat().st_size
    assert rep["verification"]["voice"]["skipped"]              # a model dir has no run config
    assert "top-1 agreement" in rep["warnings"][0]
    # the same shapes as the f16 file; the Q8_0 embedding and the vocabulary's strings are most
    # of a file this small
    assert out.stat().st_size < 0.7 * f16_file[0].stat().st_size


def test_k_quant_mix_in_the_file(tokenizer, tmp_path):
    """A llama whose rows are whole 256-blocks: q4_k_m gives Q4_K and Q6_K as llama.cpp does
    (layer 1 of 2 and the tied head get Q6_K), the gguf reader finds those types in the file, and
    transformers' reader reproduces the model rounded as stored."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    out = tmp_path / "m-q4_k_m.gguf"
    info = G.export_gguf(str(out), model=str(tmp_path / "m"), quant="q4_k_m", quantizer="numpy")
    assert info["verification"]["against_rounded_source"]["max_abs_diff"] <= 1e-4
    types = {t.name: gguf.GGMLQuantizationType(t.tensor_type).name
             for t in gguf.GGUFReader(str(out)).tensors}
    assert types == info["written"]["types"]
    assert types["token_embd.weight"] == "Q6_K"
    assert types["blk.0.ffn_down.weight"] == "Q4_K" and types["blk.1.ffn_down.weight"] == "Q6_K"
    assert types["blk.0.attn_v.weight"] == "Q4_K" and types["blk.1.attn_v.weight"] == "Q6_K"
    assert types["blk.0.attn_q.weight"] == "Q4_K" and types["blk.0.attn_norm.weight"] == "F32"


def test_qwen2_layout(tokenizer, tmp_path):
    """qwen2: q/k/v biases and no q/k permutation."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=False,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.model.layers:        # non-zero biases, or a dropped bias goes unseen
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "qwen2")
    tokenizer.save_pretrained(tmp_path / "qwen2")
    info = G.export_gguf(str(tmp_path / "q.gguf"), model=str(tmp_path / "qwen2"), quant="f16")
    assert info["verification"]["against_rounded_source"]["max_abs_diff"] <= 1e-4
    assert info["written"]["tensors"]["F32"] == 2 * 5 + 1        # norms ×2, biases ×3, final norm
    assert info["written"]["tensors"]["F16"] == 2 * 7 + 2        # untied: embedding and head


def test_a_wrong_file_is_refused_and_removed(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(W, "_permute", lambda w, *a: w)       # forget llama.cpp's q/k layout
    out = tmp_path / "bad.gguf"
    with pytest.raises(VerificationError, match="does not hold the model"):
        G.export_gguf(str(out), model=tiny_model_dir, quant="f16")
    assert list(tmp_path.iterdir()) == []


def test_unsupported_architecture():
    from types import SimpleNamespace

    with pytest.raises(G.ExportError, match="supports"):
        W._check_supported(SimpleNamespace(model_type="gpt2"))
    with pytest.raises(G.ExportError, match="RoPE scaling"):
        W._check_supported(SimpleNamespace(model_type="llama",
                                           rope_parameters={"rope_type": "llama3", "factor": 8.0}))
