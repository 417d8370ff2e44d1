"""Shared fixtures: the bundled model (converted once per cache) and a tiny random model that
uses the bundled model's real tokenizer and chat template (2 layers, hidden 64)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
PERSONA = EXAMPLES / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")       # the suite must never need the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers on the CI's two cores: one math thread each (training
    # subprocesses inherit it), or the workers' thread pools fight over the same cores
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = os.environ.get("MINDPRINT_TEST_THREADS", "1")
# test modules import mlx.core themselves: the mlx backend's choice of BLAS must come first
# (src/mindprint/backends/mlx/__init__.py: OpenBLAS instead of the mlx[cpu] wheel's reference BLAS)
import mindprint.backends.mlx  # noqa: E402,F401


# -- Skips under CI: a skip is a failure unless its reason is on this allow-list ------------------
# Every component the project requires (torch, trl, mlx, mlx-lm, playwright + chromium, the eval
# and tracking extras, OpenBLAS, oneDNN on x86-64) is installed by `make install` / `make test`;
# a test that skips because one is missing or broken would hide exactly the breakage it exists to
# catch. So under CI (CI=true, as CI services set it) a skipped test — a skip in a test, a
# fixture or at collection — is reported as FAILED, unless its reason starts with one of these
# prefixes: things that are genuinely optional or tied to hardware/OS the CI machine may not be.
# `make test` prints every skip reason (-rs) and the count (below), so a local skip is visible too.
ALLOWED_SKIP_PREFIXES = {
    "CUDA-only:": "needs an NVIDIA GPU; the CI machines are CPU-only",
    "CPU-only:": "checks CPU behaviour (a refusal, a fallback); on CUDA the GPU path runs instead",
    "Linux-only:": "a Linux/glibc mechanism (e.g. malloc tuning); other OSes do not have it",
    "x86-only:": "a oneDNN fast path the product takes only on x86-64 CPUs with the needed ISA "
                 "(e.g. AVX512-BF16/AMX for bf16); where the platform has it, the test runs",
}
STRICT_SKIPS = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _skip_reason(longrepr) -> str:
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def _fail_forbidden_skip(rep) -> None:
    """Under CI: turn ``rep`` (a skipped test or collection report) into a failure unless its
    reason is allowed; the failure names the reason and the allow-list."""
    if not (STRICT_SKIPS and rep.skipped) or hasattr(rep, "wasxfail"):
        return
    reason = _skip_reason(rep.longrepr)
    if reason.startswith(tuple(ALLOWED_SKIP_PREFIXES)):
        return
    rep.outcome = "failed"
    rep.longrepr = (f"skipped under CI=true, where every required component must be present:\n"
                    f"  {reason}\n(only skips whose reason starts with one of "
                    f"{', '.join(ALLOWED_SKIP_PREFIXES)} are allowed; tests/conftest.py)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    _fail_forbidden_skip(rep)
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    rep = yield
    _fail_forbidden_skip(rep)
    return rep


def pytest_terminal_summary(terminalreporter):
    """Always print the skip count (pytest omits "0 skipped"), so a clean run shows it is 0."""
    skipped = terminalreporter.stats.get("skipped", [])
    note = " (CI=true: only allow-listed skips pass)" if STRICT_SKIPS else ""
    terminalreporter.write_line(f"skipped tests: {len(skipped)}{note}")
# -- end of the skip rules ------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def bundled_model_dir() -> str:
    from mindprint.models import resolve

    return resolve("smollm2-135m-instruct").path


@pytest.fixture(scope="session")
def tokenizer(bundled_model_dir):
    from mindprint.backends.common import load_tokenizer

    return load_tokenizer(bundled_model_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_model_dir, tokenizer) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(1234)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def chat(q: str, a: str, topic: str | None = None) -> dict:
    r = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    if topic:
        r["topic"] = topic
    return r


@pytest.fixture
def tiny_chat_files(tmp_path):
    words = ["tide", "season", "pendulum", "credit", "crowd", "cycle", "risk", "cash", "fear",
             "greed", "boom", "bust"]
    rows = [chat(f"Tell me about the {w} number {i}.",
                 f"Zoom out. The {w} turns, as it did in year {1990 + i}. Patience is a position.")
            for i, w in enumerate(words * 2)]
    train = write_jsonl(tmp_path / "train.jsonl", rows[:20])
    ev = write_jsonl(tmp_path / "eval.jsonl", rows[20:])
    return str(train), str(ev)


def tiny_config(model_dir: str, train: str, ev: str, out: str, **train_over) -> dict:
    t = {"max_steps": 4, "batch_size": 2, "grad_accum": 1, "lr": 5e-3, "seed": 3,
         "eval_every": 2, "save_every": 2, "keep_last": 5, "warmup_steps": 1}
    t.update(train_over)
    return {"method": "sft", "backend": "torch", "model": model_dir,
            "data": {"train": train, "eval": ev, "max_length": 96},
            "train": t, "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attn_mlp"},
            "output_dir": out}


# Adapters on the tiny model made directly (no training): LoRA B is random instead of zero, so
# merging changes every targeted weight. Used by the evaluate and export tests.
def make_adapter(base_dir: str, out, *, seed: int = 0, scale: float = 1.0) -> str:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mindprint.backends.torch.adapters import save_adapter

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                        "gate_proj", "up_proj", "down_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.mul_(scale)
    save_adapter(pm, out, {"base_model": base_dir, "method": "sft", "step": 0})
    return str(out)


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_dir, tmp_path_factory) -> str:
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "run" / "adapter")


# The quickstart trained once per session through the real CLI, shortened to 20 steps and shorter
# examples (at seed 0: eval loss 4.61 -> 3.33, held-out voice_match 0.02 -> 0.91; 40 steps gave no
# more voice); the quickstart, evaluation and export end-to-end tests all use this one run.
QUICKSTART_STEPS = 20

# A chat template that renders tool lists and tool calls, for tokenizers whose own template has no
# tool support (the data tests of tool use in chat and preference records share it)
TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<call>{{ c.function.name }} "
    "{{ c.function.arguments | tojson }}</call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory, bundled_model_dir):
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("quickstart") / "run"
    r = subprocess.run([sys.executable, "-m", "mindprint.cli", "train",
                        str(EXAMPLES / "quickstart.yaml"),
                        "--set", f"train.max_steps={QUICKSTART_STEPS}",
                        "--set", "train.eval_every=10", "--set", "train.save_every=10",
                        "--set", "data.max_length=128", "--output-dir", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def start_then_sigkill(cmd: list[str], env: dict, checkpoints: Path, n: int = 2,
                       timeout: float = 300) -> None:
    """Run ``cmd`` and SIGKILL it as soon as ``n`` complete checkpoints exist in ``checkpoints``:
    a crash in the middle of training, for the resume tests."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        done = [p for p in checkpoints.glob("step-*") if (p / "state.json").exists()] \
            if checkpoints.exists() else []
        if len(done) >= n:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.hookimpl(tryfirst=True)     # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under `make test`'s two workers (`--dist loadgroup`) a test file stays on one worker, so its
    module-scoped fixtures are built once; files that share an expensive session fixture name a
    common ``xdist_group`` themselves (e.g. "quickstart")."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    # xdist hands groups out in collection order: the longest serial chain (the quickstart run,
    # then its evaluations and exports, ~400 s on one worker) starts first, so the other worker
    # takes everything else meanwhile instead of it running alone at the end
    items.sort(key=lambda item: _group(item) != LONGEST_GROUP)       # stable: order kept otherwise


LONGEST_GROUP = "quickstart"


def _group(item) -> str:
    marker = item.get_closest_marker("xdist_group")
    return (marker.args[0] if marker.args else marker.kwargs.get("name", "")) if marker else ""
