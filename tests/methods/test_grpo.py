"""GRPO on the tiny model: data checks, seeded sampling, accumulation invariance, a short run whose
reward moves, and the bundled model through the CLI (slow)."""

import json
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from mindprint import config as config_mod
from mindprint.errors import ConfigError, DataError

from conftest import EXAMPLES, REPO, write_jsonl


def _prompts(n=8):
    qs = ["Where is the tide going", "What is a cycle", "How do crowds move", "Why do booms end",
          "What is credit", "When does fear win", "Is cash a position", "What follows a bust"]
    return [{"prompt": f"{qs[i % len(qs)]}?", "answer": "Zoom out. Patience is a position."}
            for i in range(n)]


def grpo_config(model_dir, train, out, grpo=None, **train_over):
    t = {"max_steps": 3, "batch_size": 2, "grad_accum": 1, "lr": 5e-3, "seed": 3,
         "eval_every": 0, "save_every": 0, "warmup_steps": 0, "eval_at_start": False}
    t.update(train_over)
    g = {"group_size": 4, "max_completion_length": 8, "rewards": ["length"],
         "length_range": [1, 3], "sample_every": 1}
    g.update(grpo or {})
    return config_mod.from_dict({
        "method": "grpo", "model": model_dir, "data": {"train": train, "max_length": 64},
        "train": t, "grpo": g, "output_dir": out,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attn_mlp"}})


def test_group_size_one_is_refused_and_names_suggested():
    base = {"method": "grpo", "data": {"train": "x.jsonl"}}
    with pytest.raises(ConfigError, match="grpo.group_size: must be at least 2"):
        config_mod.from_dict({**base, "grpo": {"group_size": 1}})
    with pytest.raises(ConfigError, match="less than or equal to 64"):
        config_mod.from_dict({**base, "grpo": {"group_size": 65}})
    with pytest.raises(ConfigError, match="did you mean 'grpo.group_size'"):
        config_mod.from_dict({**base, "grpo": {"num_generations": 4}})


def test_long_prompts_are_reported_with_file_line(tmp_path, tokenizer, tiny_model_dir):
    from mindprint.methods.grpo import GRPOMethod

    rows = _prompts(3)
    rows[1]["prompt"] = "word " * 80
    train = write_jsonl(tmp_path / "p.jsonl", rows)
    cfg = grpo_config(tiny_model_dir, str(train), str(tmp_path / "run"))
    with pytest.raises(DataError) as e:
        GRPOMethod(cfg).prepare(tokenizer)
    assert any(p.startswith(f"{train}:2: the prompt is") and "data.max_length − "
               "grpo.max_completion_length = 56" in p for p in e.value.problems)
    with pytest.raises(ConfigError, match="leaves no room"):
        GRPOMethod(grpo_config(tiny_model_dir, str(train), "x", {"max_completion_length": 64}))


def test_chat_data_is_refused(tmp_path, tokenizer, tiny_model_dir):
    from mindprint.methods.grpo import GRPOMethod

    train = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                             {"role": "assistant", "content": "a"}]}])
    with pytest.raises(DataError, match="needs prompt"):
        GRPOMethod(grpo_config(tiny_model_dir, str(train), "x")).prepare(tokenizer)


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir):
    from mindprint.backends.torch.backend import TorchBackend
    from mindprint.backends.torch.load import load_base
    from mindprint.backends.torch.lora import add_lora
    from mindprint.models import resolve

    model, tok = load_base(resolve(tiny_model_dir), dtype="float32", device="cpu")
    cfg = config_mod.LoraConfig(r=4, alpha=8, dropout=0.0)
    model = add_lora(model, cfg, 0)
    with torch.no_grad():       # a non-zero adapter, so adapter-off differs from adapter-on
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return TorchBackend(model, tok)


def test_sampling_is_seeded_and_stops_at_end_of_turn(tiny_backend):
    from mindprint.backends.torch.generate import sample_completions

    tok = tiny_backend.tokenizer
    prompts = [[1, 2, 3, 4], [5, 6]]
    kw = dict(n=3, max_new_tokens=6, temperature=1.0, top_p=0.9)
    torch.manual_seed(0)
    before = torch.rand(1)
    a = sample_completions(tiny_backend.model, tok, prompts, seed=7, **kw)
    b = sample_completions(tiny_backend.model, tok, prompts, seed=7, **kw)
    c = sample_completions(tiny_backend.model, tok, prompts, seed=8, **kw)
    assert a == b and a != c and len(a) == 6
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), before)          # the global stream is left alone
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    for ids, finished in a:
        assert 1 <= len(ids) <= 6
        assert (ids[-1] == eos) == finished and eos not in ids[:-1]


def _samples(backend, n, seed):
    from mindprint.methods.grpo import Sample

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        p, c = int(torch.randint(3, 7, (1,), generator=g)), int(torch.randint(2, 6, (1,), generator=g))
        ids = torch.randint(10, 500, (p + c,), generator=g).tolist()
        out.append(Sample(p, ids, c, float(torch.randn(1, generator=g))))
    return out


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("iterations,beta", [(1, 0.0), (2, 0.1)])
def test_accumulation_invariance(tiny_backend, tmp_path, loss_type, iterations, beta):
    """Gradient of 4 completions in one micro-batch = two micro-batches of 2 accumulated."""
    from mindprint.methods.grpo import GRPOMethod

    cfg = grpo_config("x", "x.jsonl", str(tmp_path), {"loss_type": loss_type, "num_iterations": iterations,
                                                 "beta": beta, "temperature": 0.7})
    method = GRPOMethod(cfg)
    samples = _samples(tiny_backend, 4, seed=1)
    for part in (samples[:2], samples[2:]):
        if beta:
            for s, r in zip(part, method._side_logps(tiny_backend, part, reference=True)):
                s.ref = r
        if iterations > 1:       # an "old" policy a little away from the current one
            for s, o in zip(part, method._side_logps(tiny_backend, part, reference=False)):
                s.old = o + 0.05 * torch.randn(o.shape, generator=torch.Generator().manual_seed(2)).numpy()
    params = [p for p in tiny_backend.model.parameters() if p.requires_grad]

    def grads(micro):
        for p in params:
            p.grad = None
        norm = sum(method.weight(m) for m in micro)
        for m in micro:
            loss, _ = method.micro_loss(tiny_backend, m, norm)
            loss.backward()
        return [p.grad.clone() for p in params]

    one = grads([samples])
    two = grads([samples[:2], samples[2:]])
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-6)   # float32, other padding
    assert sum(float(a.abs().sum()) for a in one) > 0


def test_temperature_scales_the_log_probs(tiny_backend):
    from mindprint.backends.torch.logps import completion_logps

    seqs, masks = [[5, 6, 7, 8, 9]], [[0, 0, 1, 1, 1]]
    batch = tiny_backend.batch(seqs, masks)
    with torch.no_grad():
        lp, ent = completion_logps(tiny_backend.model, batch, 0.5, entropy=True)
        logits = tiny_backend.model(input_ids=batch["input_ids"]).logits[0, 1:4].float() / 0.5
        want = torch.log_softmax(logits, -1).gather(-1, torch.tensor([[7], [8], [9]])).squeeze(-1)
        torch.testing.assert_close(lp[0, 2:], want, rtol=1e-4, atol=1e-5)
        p = torch.softmax(logits, -1)
        assert ent == pytest.approx(float(-(p * p.log()).sum()), rel=1e-4)


REWARD_MODULE = textwrap.dedent("""
    def few_words(prompts, completions, records):
        # fewer words per completion is better: the tiny model can learn to glue tokens together
        return [-float(len(c.split())) for c in completions]
    def broken(prompts, completions, records):
        return [1.0] * (len(completions) - 1)
""")


def test_grpo_run_on_tiny_model(tmp_path, tiny_model_dir, monkeypatch):
    from mindprint.training import run_training

    (tmp_path / "tiny_rewards.py").write_text(REWARD_MODULE)
    monkeypatch.chdir(tmp_path)
    train = write_jsonl(tmp_path / "p.jsonl", _prompts(8))
    out = tmp_path / "run"
    cfg = grpo_config(tiny_model_dir, str(train), str(out),
                      {"rewards": ["tiny_rewards:few_words", "length"], "reward_weights": [1.0, 0.5],
                       "group_size": 4, "beta": 0.05, "num_iterations": 2, "sample_every": 1},
                      max_steps=4, eval_every=4)
    cfg.data.eval = [str(write_jsonl(tmp_path / "e.jsonl", _prompts(3)))]
    summary = run_training(cfg, log=lambda *a: None)
    assert summary["steps"] == 4
    ev = summary["final_eval_metrics"]           # greedy answers to held-out prompts, same rewards
    assert ev["eval_loss"] == pytest.approx(-ev["eval_reward"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "reward" in r]
    assert len(train_rows) == 4
    for key in ("reward", "reward_std", "advantage_std", "zero_std_groups", "clip_low", "clip_high",
                "kl", "entropy", "completion_len_mean", "completion_len_max",
                "rewards/tiny_rewards:few_words/mean", "rewards/length/std"):
        assert key in train_rows[0], key
    assert train_rows[0]["reward"] == train_rows[1]["reward"]     # num_iterations=2 reuses step 1's
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 3} and len(samples) == 2 * 2 * 4
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_a_broken_reward_stops_the_run_naming_it(tmp_path, tiny_model_dir, monkeypatch):
    from mindprint.training import run_training
    from mindprint.errors import MindprintError

    (tmp_path / "tiny_rewards.py").write_text(REWARD_MODULE)
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("tiny_rewards", None)
    train = write_jsonl(tmp_path / "p.jsonl", _prompts(4))
    cfg = grpo_config(tiny_model_dir, str(train), str(tmp_path / "run"),
                      {"rewards": ["tiny_rewards:broken"]})
    with pytest.raises(MindprintError, match="reward 'tiny_rewards:broken' returned 7 value"):
        run_training(cfg, log=lambda *a: None)
    sys.modules.pop("tiny_rewards", None)


def test_reward_rises_on_tiny_model(tmp_path, tiny_model_dir, monkeypatch):
    """A reward the tiny model can move: fewer words per 8-token completion (tokens without a
    leading space). At temperature 0.05 its near-flat logits become a policy that learning can
    shift; the mean reward goes from about −6 words to −1 within 20 steps (seed 4; how fast it
    gets there depends on the sampled groups, e.g. seed 3 only gains about a word in 20 steps)."""
    from mindprint.training import run_training

    (tmp_path / "tiny_rewards.py").write_text(REWARD_MODULE)
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("tiny_rewards", None)
    train = write_jsonl(tmp_path / "p.jsonl", _prompts(8))
    out = tmp_path / "run"
    cfg = grpo_config(tiny_model_dir, str(train), str(out),
                      {"rewards": ["tiny_rewards:few_words"], "group_size": 8, "temperature": 0.05,
                       "sample_every": 0}, max_steps=20, lr=0.05, seed=4)
    run_training(cfg, log=lambda *a: None)
    sys.modules.pop("tiny_rewards", None)
    r = [json.loads(line)["reward"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(r[:5]) / 5, sum(r[-5:]) / 5
    assert last > first + 1.0, r
    assert not (out / "samples.jsonl").exists()


@pytest.mark.slow
def test_grpo_cli_on_bundled_model(tmp_path, bundled_model_dir):
    """examples/grpo.yaml through the CLI, cut to 3 steps."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "mindprint.cli", "train", str(EXAMPLES / "grpo.yaml"),
                        "--set", "train.max_steps=3", "--set", "grpo.group_size=4",
                        "--set", "grpo.max_completion_length=16", "--set", "grpo.sample_every=2",
                        "--set", "grpo.rewards=[length, banned_phrases]",
                        "--output-dir", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "grpo" and summary["steps"] == 3
    m = summary["final_train_metrics"]
    assert m["completion_len_max"] <= 16 and "rewards/banned_phrases/mean" in m
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2} and all(s["completion"] for s in samples)
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_fast_sampler_matches_generate(tiny_backend):
    """The static-cache sampler (adapter merged) decodes greedily exactly as ``model.generate``
    with the adapter on, for prompts of different lengths (left padding) and several rows each."""
    from mindprint.backends.torch.sampling import fast_sampler
    from mindprint.backends.torch.generate import sample_completions

    model, tok = tiny_backend.model, tiny_backend.tokenizer
    assert fast_sampler(model) is not None
    prompts = [[1, 2, 3, 4, 5, 6, 7], [5, 6], [9, 10, 11]]
    kw = dict(n=2, max_new_tokens=12, temperature=0.0, top_p=1.0, seed=0)
    fast = sample_completions(model, tok, prompts, **kw)
    slow = sample_completions(model, tok, prompts, fast=False, **kw)
    assert fast == slow and len(fast) == 6
    assert fast[0] == fast[1] and fast[0] != fast[2]           # n rows per prompt, in order


def test_fast_sampler_declines_dora(tiny_model_dir):
    from mindprint.backends.torch.load import load_base
    from mindprint.backends.torch.lora import add_lora
    from mindprint.backends.torch.sampling import fast_sampler
    from mindprint.models import resolve

    model, _ = load_base(resolve(tiny_model_dir), dtype="float32", device="cpu")
    assert fast_sampler(add_lora(model, config_mod.LoraConfig(r=2, dora=True), 0)) is None


def test_inverse_cdf_sampling_frequencies():
    """_pick draws tokens with the softmax's frequencies and never outside the top-p nucleus."""
    from mindprint.backends.torch.sampling import _pick

    N = 20000
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = p.log().repeat(N, 1)
    g = torch.Generator().manual_seed(0)

    def close(freq, want):
        # a frequency of N draws has std sqrt(q(1-q)/N) (0.0035 at q = 0.5): within 4.5 std per
        # token, and exactly 0 for a token outside the nucleus
        want = torch.as_tensor(want)
        tol = 4.5 * (want * (1 - want) / N).sqrt()
        assert ((freq - want).abs() <= tol).all(), (freq, want, tol)

    close(torch.bincount(_pick(logits, 1.0, 1.0, g), minlength=4).float() / N, p)
    # top_p 0.7: the smallest prefix reaching 0.7 is {0, 1}, renormalised to 0.625 / 0.375
    close(torch.bincount(_pick(logits, 1.0, 0.7, g), minlength=4).float() / N, [0.625, 0.375, 0.0, 0.0])
    # temperature 0.5 squares the odds: p² / Σp² = [0.25, 0.09, 0.0225, 0.0025] / 0.365
    close(torch.bincount(_pick(logits, 0.5, 1.0, g), minlength=4).float() / N, p ** 2 / (p ** 2).sum())


def test_nucleus_from_topk_picks_what_a_full_sort_picks():
    """_pick finds the top-p nucleus among each row's top 64, then top 1024, then all tokens:
    every row gets the token that sorting the whole vocabulary (the textbook nucleus) gives
    for the same uniform draw, whichever of the three rounds its nucleus ends in."""
    from mindprint.backends.torch.sampling import _pick

    def by_sorting(logits, temperature, top_p, gen):
        probs = torch.softmax(logits / temperature, -1)
        u = torch.rand((probs.shape[0], 1), generator=gen)
        probs, order = probs.sort(-1, descending=True)
        probs = probs.masked_fill((probs.cumsum(-1) - probs) > top_p, 0.0)
        cdf = probs.cumsum(-1)
        idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=cdf.shape[-1] - 1)
        return order.gather(-1, idx).squeeze(1)

    g = torch.Generator().manual_seed(3)
    vocab = 5000
    # peaked rows (nucleus inside the top 64), broader ones (inside 1024), near-flat ones (sort)
    logits = torch.cat([torch.randn(40, vocab, generator=g) * s for s in (12.0, 4.0, 0.3)])
    mass64 = torch.softmax(logits, -1).topk(64, -1).values.sum(-1)
    mass1k = torch.softmax(logits, -1).topk(1024, -1).values.sum(-1)
    assert (mass64 > 0.9).any() and ((mass64 <= 0.9) & (mass1k > 0.9)).any() and (mass1k <= 0.9).any()
    for temperature, top_p in [(1.0, 0.9), (1.0, 0.5), (0.7, 0.95), (1.3, 0.99)]:
        for seed in range(3):
            got = _pick(logits, temperature, top_p, torch.Generator().manual_seed(seed))
            want = by_sorting(logits, temperature, top_p, torch.Generator().manual_seed(seed))
            assert torch.equal(got, want), (temperature, top_p, seed)


def test_packed_logps_match_one_row_per_completion(tiny_backend):
    """Completions of one prompt packed after a single copy of it give the same log-probs,
    entropy and gradient as one padded row per completion."""
    from mindprint.backends.torch.logps import completion_logps
    from mindprint.backends.torch.packing import packed_completion_logps
    from mindprint.methods.grpo import Sample

    model, pad = tiny_backend.model, tiny_backend.tokenizer.pad_token_id
    g = torch.Generator().manual_seed(4)
    samples = []
    for p_len, lens in ((6, (3, 5, 2)), (4, (4, 1))):
        prompt = torch.randint(10, 500, (p_len,), generator=g).tolist()
        for n in lens:
            samples.append(Sample(p_len, prompt + torch.randint(10, 500, (n,), generator=g).tolist(),
                                  n, 0.0))
    params = [p for p in model.parameters() if p.requires_grad]

    def run(packed):
        for p in params:
            p.grad = None
        if packed:
            lp, mask, ent = packed_completion_logps(model, [s.ids[:s.prompt_len] for s in samples],
                                                    [s.ids[s.prompt_len:] for s in samples], pad,
                                                    0.7, entropy=True)
        else:
            batch = tiny_backend.batch([s.ids for s in samples], [s.mask for s in samples])
            lp, ent = completion_logps(model, batch, 0.7, entropy=True)
            mask = batch["loss_mask"]
        flat = lp[mask.bool()]
        (flat * torch.linspace(-1, 1, flat.numel())).sum().backward()
        return flat.detach(), ent, [p.grad.clone() for p in params]

    a, b = run(True), run(False)
    assert a[0].numel() == sum(s.n_completion for s in samples) == 15
    torch.testing.assert_close(a[0], b[0], rtol=1e-4, atol=1e-5)
    assert a[1] == pytest.approx(b[1], rel=1e-4)
    for x, y in zip(a[2], b[2]):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-6)


def test_sampler_dtype_setting(tiny_backend):
    """grpo.sampler_dtype → the sampler's weight dtype: explicit names are obeyed; auto casts a
    float32 model to bfloat16 only where oneDNN (CPU) or CUDA has native bf16 kernels."""
    from mindprint.backends.torch.sampling import sampler_dtype

    model = tiny_backend.model
    assert sampler_dtype("float32", model) is torch.float32
    assert sampler_dtype("bfloat16", model) is torch.bfloat16
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert sampler_dtype("auto", model) is (torch.bfloat16 if native else None)
    with pytest.raises(ValueError, match="auto, float32 or bfloat16"):
        sampler_dtype("fp8", model)
    with pytest.raises(Exception, match="sampler_dtype"):
        config_mod.from_dict({"method": "grpo", "data": {"train": "x.jsonl"},
                              "grpo": {"sampler_dtype": "half"}})


def test_bf16_sampler_decodes_like_float32(tiny_backend):
    """A bfloat16 copy of the weights samples the same structure (n rows per prompt, ids cut at
    end-of-turn) and, greedily, mostly the same tokens as the float32 weights; the model itself
    is untouched (still float32)."""
    from mindprint.backends.torch.sampling import fast_sampler
    from mindprint.backends.torch.generate import sample_completions

    model, tok = tiny_backend.model, tiny_backend.tokenizer
    s = fast_sampler(model, torch.bfloat16)
    assert s.head_w.dtype == torch.bfloat16 and s.layers[0][1].dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32
    prompts = [[1, 2, 3, 4, 5, 6, 7], [5, 6]]
    kw = dict(n=2, max_new_tokens=8, temperature=0.0, top_p=1.0, seed=0)
    a = sample_completions(model, tok, prompts, **kw)
    b = sample_completions(model, tok, prompts, dtype=torch.bfloat16, **kw)
    assert len(b) == 4 and b[0] == b[1]
    assert all(len(ids) <= 8 and (not fin or ids[-1] in (tok.eos_token_id,
               tok.convert_tokens_to_ids("<|im_end|>"))) for ids, fin in b)
    same = sum(x == y for (ia, _), (ib, _) in zip(a, b) for x, y in zip(ia, ib))
    assert same >= len(a[0][0])          # at least one row's worth of tokens agree


def test_prepacked_bf16_sampler_is_exact(tiny_backend, monkeypatch):
    """On a CPU with oneDNN bf16, the bf16 sampler prepacks its weights once per rollout; the
    packed products give exactly the plain F.linear results: the same logits and the same
    sampled tokens for a seed."""
    from mindprint.backends.torch import sampling as S

    model = tiny_backend.model
    # skip only where the platform lacks oneDNN bf16 (not x86-64, no mkldnn, no AVX512-BF16/AMX);
    # where it has it, the sampler's own self-check (_packer) failing is a failure
    if not (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        pytest.skip("x86-only: oneDNN bf16 linear needs an x86-64 CPU with AVX512-BF16 or AMX")
    assert S._packer(torch.bfloat16, torch.device("cpu")) is not None, \
        "the CPU has oneDNN bf16 but the sampler's prepacking self-check failed (sampling._packer)"
    packed = S.fast_sampler(model, torch.bfloat16)
    assert packed.lin is S.dnn_linear and packed.head_w.layout == torch._mkldnn
    monkeypatch.setattr(S, "_packer", lambda dtype, device: None)
    plain = S.fast_sampler(model, torch.bfloat16)
    assert plain.lin is torch.nn.functional.linear
    h = torch.randn(3, 1, model.config.hidden_size).to(torch.bfloat16)
    assert torch.equal(packed._logits(h), plain._logits(h))
    kw = dict(n=3, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7, eos=[2], pad=0)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [5, 6]]
    assert packed.sample(prompts, **kw) == plain.sample(prompts, **kw)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_fused_sampler_weights_are_the_merged_layers(tiny_backend, dtype):
    """The sampler's fused q|k|v and gate|up weights are each layer's merged weight
    W + s·B·A (PEFT's own delta), the query rows times 1/sqrt(head_dim), in the asked dtype."""
    from mindprint.backends.torch.sampling import _fused

    layer = tiny_backend.model.get_base_model().model.layers[1]
    a, m = layer.self_attn, layer.mlp
    hd = a.head_dim
    w, b = _fused((a.q_proj, a.k_proj, a.v_proj), (hd ** -0.5, 1.0, 1.0), dtype)

    def merged(lin):
        base = lin.base_layer.weight if hasattr(lin, "base_layer") else lin.weight
        return base + (lin.get_delta_weight("default") if hasattr(lin, "lora_A") else 0)

    want = torch.cat([merged(a.q_proj) * hd ** -0.5, merged(a.k_proj), merged(a.v_proj)]).detach()
    assert b is None and w.shape == want.shape and hasattr(a.q_proj, "lora_A")
    assert not torch.equal(merged(a.q_proj), a.q_proj.base_layer.weight)   # the adapter counts
    if dtype is None:
        assert w.dtype == torch.float32
        torch.testing.assert_close(w, want, rtol=1e-6, atol=1e-7)
    else:     # at most one bf16 rounding step from the float32 merge
        assert w.dtype == torch.bfloat16
        torch.testing.assert_close(w.float(), want, rtol=2 ** -7, atol=1e-6)
    gu, _ = _fused((m.gate_proj, m.up_proj), (1.0, 1.0), dtype)
    torch.testing.assert_close(gu.float(), torch.cat([merged(m.gate_proj), merged(m.up_proj)]).detach(),
                               rtol=1e-6 if dtype is None else 2 ** -7, atol=1e-6)


def test_sampler_merges_several_active_adapters(tiny_model_dir):
    """Two active adapters on a layer: the sampler's weight is the base plus both deltas (the
    general merge, not the one-adapter addmm)."""
    import copy

    from mindprint.backends.torch.load import load_base
    from mindprint.backends.torch.lora import add_lora
    from mindprint.backends.torch.sampling import _fused, _lora_parts
    from mindprint.models import resolve

    model, _ = load_base(resolve(tiny_model_dir), dtype="float32", device="cpu")
    model = add_lora(model, config_mod.LoraConfig(r=2, alpha=4, dropout=0.0), 0)
    model.add_adapter("second", copy.deepcopy(model.peft_config["default"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.base_model.set_adapter(["default", "second"])
    q = model.get_base_model().model.layers[0].self_attn.q_proj
    assert _lora_parts(q) is None
    want = q.base_layer.weight + q.get_delta_weight("default") + q.get_delta_weight("second")
    w, _ = _fused((q,), (0.5,), None)
    torch.testing.assert_close(w, (want * 0.5).detach(), rtol=1e-6, atol=1e-7)
