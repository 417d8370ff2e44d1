"""The public Python API (``mindprint.train / load / evaluate / export / voice_score / datasets``):
each entry point once on the tiny model (one shared 3-step run), the config overrides, the lazy
package, notebook progress, and the API reference build."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import PERSONA, REPO, chat, tiny_config, write_jsonl

import mindprint
from mindprint.errors import ConfigError, DataError, MindprintError


# -- the package ---------------------------------------------------------------------------------
def test_import_is_light_and_every_public_name_resolves():
    code = ("import sys, mindprint\n"
            "heavy = [m for m in ('torch', 'transformers', 'mlx.core', 'sklearn')\n"
            "         if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "import mindprint.evaluate.runner, mindprint.export.adapters\n"   # the subpackages
            "assert callable(mindprint.evaluate) and callable(mindprint.export)\n"
            "print(sorted(n for n in mindprint.__all__ if getattr(mindprint, n) is None))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert {"train", "load", "evaluate", "export", "voice_score", "datasets", "Run",
            "Model", "load_config"} <= set(mindprint.__all__)
    with pytest.raises(AttributeError):
        mindprint.no_such_name  # noqa: B018


def test_the_api_reference_builds_with_every_public_name(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "build_docs.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "mindprint.html").read_text(encoding="utf-8")
    missing = [n for n in mindprint.__all__ if n != "datasets" and f'id="{n}"' not in page]
    assert not missing, missing
    data = (tmp_path / "mindprint" / "api" / "datasets.html").read_text(encoding="utf-8")
    missing = [n for n in ("validate", "stats", "convert", "mix", "split")
               if f'id="{n}"' not in data]
    assert not missing, missing


def test_the_readme_python_example_compiles_and_uses_public_names_only():
    import ast
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^## Python API\n.*?^```python\n(.*?)^```", readme, re.S | re.M).group(1)
    tree = ast.parse(block)
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "mindprint"}
    assert {"train", "load", "evaluate", "export", "voice_score", "datasets"} <= used
    assert used <= set(mindprint.__all__), used - set(mindprint.__all__)
    files = re.findall(r'"(examples/[^"]+)"', block)
    assert files and all((REPO / f).exists() for f in files if "." in Path(f).name), files


# -- configs -------------------------------------------------------------------------------------
def test_load_config_takes_a_dict_a_file_or_a_config_with_keyword_overrides(tmp_path):
    raw = {"method": "dpo", "train": {"lr": 1e-4, "max_steps": 7}, "output_dir": "runs/x",
           "data": {"train": "pairs.jsonl"}}
    cfg = mindprint.load_config(raw, train__lr=3e-4, lora={"r": 4, "alpha": 8},
                                model="tiny/dir")
    assert (cfg.method, cfg.train.lr, cfg.train.max_steps) == ("dpo", 3e-4, 7)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.model.name) == (4, 8, "tiny/dir")
    assert raw["train"]["lr"] == 1e-4                   # the caller's dict is not changed
    # a section's dict is merged into it (the file's other keys stay); a dict-valued key is set
    merged = mindprint.load_config({**raw, "model": {"name": "a", "dtype": "float32"}},
                                   train={"seed": 11}, data={"columns": {"prompt": "q"}},
                                   model="b")
    assert (merged.model.name, merged.model.dtype) == ("b", "float32")
    assert (merged.train.seed, merged.train.lr, merged.train.max_steps) == (11, 1e-4, 7)
    assert merged.data.columns == {"prompt": "q"} and merged.data.train == ["pairs.jsonl"]
    again = mindprint.load_config(cfg, train__max_steps=9)
    assert (again.train.max_steps, cfg.train.max_steps, again.method) == (9, 7, "dpo")
    (tmp_path / "data").mkdir()
    f = tmp_path / "c.yaml"
    f.write_text("method: sft\ndata:\n  train: data/t.jsonl\n", encoding="utf-8")
    from_file = mindprint.load_config(f, data__max_length=64)
    assert from_file.data.max_length == 64
    assert Path(from_file.data.train[0]) == tmp_path / "data" / "t.jsonl"   # beside the file


def test_a_wrong_override_names_the_key_with_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"train__lr.*unknown key 'train.lrr'.*train.lr"):
        mindprint.load_config(None, train__lrr=1e-4)
    with pytest.raises(ConfigError, match="train.max_steps"):
        mindprint.load_config({"data": {"train": "t.jsonl"}, "train": {"max_steps": "many"}})
    with pytest.raises(ConfigError, match="expected a Config, a mapping or a YAML path"):
        mindprint.load_config(42)


# -- one tiny run shared by the model-level entry points ----------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    words = ["harbour", "ledger", "quarry", "orchard", "kettle", "lantern", "meadow", "anvil"]
    rows = [chat(f"What would you do about the {w}?",
                 f"Honestly, the {w} can wait until Tuesday; I never rush a thing like that.")
            for w in words]
    train = write_jsonl(d / "train.jsonl", rows[:6])
    ev = write_jsonl(d / "eval.jsonl", rows[6:])
    notes: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINDPRINT_MALLOC_TUNING", "0")    # leave this test process's malloc as it is
        run = mindprint.train(tiny_config(tiny_model_dir, str(train), str(ev), str(d / "run")),
                              train={"max_steps": 3, "eval_every": 3, "save_every": 3},
                              log=notes.append)
    return run, d, notes


def test_train_returns_the_run_with_summary_metrics_and_adapter(tiny_run):
    run, _, notes = tiny_run
    assert isinstance(run, mindprint.Run)
    assert run.summary["steps"] == 3 and run.summary["stopped"] == "max_steps"
    assert run.adapter is not None and (run.adapter / "adapter_config.json").exists()
    assert [r["step"] for r in run.metrics if "loss" in r] == [1, 2, 3]
    assert any("eval_loss" in r for r in run.metrics)
    assert json.loads((run.path / "summary.json").read_text())["steps"] == 3
    assert notes and notes[0].startswith("mindprint ") and "sft on" in notes[0]
    reopened = mindprint.Run.load(run.path)
    assert reopened.summary == run.summary and reopened.status == "completed"


def test_train_refuses_an_existing_run_without_overwrite(tiny_run):
    run, _, _ = tiny_run
    with pytest.raises(MindprintError, match="already holds a run"):
        mindprint.train(mindprint.load_config(run.config), log=None)


def test_load_generates_from_strings_and_chats(tiny_run):
    run, _, _ = tiny_run
    model = mindprint.load(run, device="cpu")
    assert model.adapter == run.adapter
    one = model.generate("Tell me about the harbour.", max_new_tokens=4)
    many = model.generate(["Tell me about the harbour.", [{"role": "user", "content": "Hi"}]],
                          max_new_tokens=4)
    assert isinstance(one, str) and len(many) == 2 and all(isinstance(a, str) for a in many)
    assert model.generate("Tell me about the harbour.", max_new_tokens=4) == one    # greedy
    with pytest.raises(MindprintError, match="must end with a user message"):
        model.generate([[{"role": "assistant", "content": "x"}]])


def test_evaluate_writes_the_report_of_the_run(tiny_run, tmp_path):
    run, d, _ = tiny_run
    report = mindprint.evaluate(run, chat=d / "eval.jsonl", out=tmp_path / "ev", device="cpu",
                                log=None)
    assert report["variants"] == ["base", "tuned"]
    assert report["summary"]["tuned"]["perplexity"] > 1
    assert report["summary"]["base"]["perplexity"] != report["summary"]["tuned"]["perplexity"]
    assert (tmp_path / "ev" / "report.json").exists() and report["out"] == str(tmp_path / "ev")


def test_export_converts_to_mlx_and_back_and_merges(tiny_run, tmp_path):
    from safetensors.numpy import load_file

    run, _, _ = tiny_run
    mlx = mindprint.export(run, tmp_path / "mlx", to="mlx", log=None)
    assert mlx["source_format"] == "peft" and (tmp_path / "mlx" / "adapters.safetensors").exists()
    back = mindprint.export(tmp_path / "mlx", tmp_path / "peft", to="peft", log=None)
    assert back["source_format"] == "mlx"
    a = load_file(str(run.adapter / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "peft" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    merged = mindprint.export(run, tmp_path / "merged", to="merged", device="cpu", log=None)
    check = merged["checks"]["merge"]
    assert check["max_abs_diff"] <= check["tolerance"]
    assert (tmp_path / "merged" / "config.json").exists()
    with pytest.raises(MindprintError, match="exists"):
        mindprint.export(run, tmp_path / "mlx", to="mlx")
    with pytest.raises(MindprintError, match="choose one of merged, gguf, peft, mlx"):
        mindprint.export(run, tmp_path / "x", to="onnx")


# -- no model ------------------------------------------------------------------------------------
def test_voice_score_takes_one_path_or_several():
    texts = PERSONA / "compare_prompts.txt"
    res = mindprint.voice_score(PERSONA / "persona_train.jsonl", texts)
    n = sum(1 for line in texts.read_text(encoding="utf-8").splitlines() if line.strip())
    assert len(res["scores"]) == n and all(0 <= s <= 1 for s in res["scores"])
    assert 0.5 < res["verifier_auc"] <= 1
    again = mindprint.voice_score([str(PERSONA / "persona_train.jsonl")], [texts])
    assert again["scores"] == res["scores"]


def test_datasets_validate_split_mix_and_stats(tmp_path, tiny_model_dir):
    rows = [chat(f"Question {i} about {t}?", f"An answer about {t}, number {i}.", topic=t)
            for i, t in enumerate(["tea", "boats", "tea", "rain", "boats", "tea", "rain", "tea"])]
    good = write_jsonl(tmp_path / "good.jsonl", rows)
    bad = write_jsonl(tmp_path / "bad.jsonl", [rows[0], '{"messages": [}', {"messages": "hi"}])
    rep = mindprint.datasets.validate(good)
    assert rep.ok and rep.valid == 8 and rep.topics == {"tea": 4, "boats": 2, "rain": 2}
    rep = mindprint.datasets.validate(bad)
    assert (rep.valid, rep.invalid) == (1, 2)
    assert [p.split(": ")[0] for p in rep.problems] == [f"{bad}:2", f"{bad}:3"]
    assert mindprint.datasets.report(rep).splitlines()[:2] == rep.problems
    assert mindprint.datasets.report(mindprint.datasets.validate(good)).startswith("ok: 8 records")
    with pytest.raises(DataError):
        mindprint.datasets.validate(tmp_path / "missing.jsonl")
    sp = mindprint.datasets.split(good, eval_count=2, prefix=tmp_path / "s", log=lambda s: None)
    lines = [len(Path(p).read_text().splitlines()) for p in (sp.train_out, sp.eval_out)]
    assert lines == [6, 2]
    mindprint.datasets.mix([f"{sp.train_out}:2", str(sp.eval_out)], tmp_path / "m.jsonl",
                           log=lambda s: None)
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 14
    conv = mindprint.datasets.convert(good, tmp_path / "p.jsonl", to="prompt", log=lambda s: None)
    back = mindprint.datasets.validate(conv.output)
    assert (back.format, back.valid, back.invalid) == ("prompt", 8, 0)
    st = mindprint.datasets.stats(good, model=tiny_model_dir, max_length=12, log=lambda s: None)
    assert st.records == 8 and st.truncated + st.dropped > 0


# -- progress in a notebook ----------------------------------------------------------------------
def test_progress_is_a_tqdm_bar_in_a_notebook_and_lines_elsewhere(monkeypatch):
    from mindprint import progress

    assert isinstance(progress.progress_bar(3, stream=io.StringIO()), progress.TrainProgress)
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: object()
    monkeypatch.setitem(sys.modules, "IPython", fake)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert progress.in_notebook()
    buf = io.StringIO()
    bar = progress.NotebookProgress(4, 1, desc="sft train", stream=buf)
    bar.update(3, loss=1.2345, tokens_per_s=1500)
    bar.note("step 3: eval_loss 1.0000")
    bar.close()
    out = buf.getvalue()
    assert "sft train" in out and "3/4" in out and "loss 1.2345" in out and "step 3: eval" in out
    fake.get_ipython = lambda: None                      # IPython imported, no shell running
    assert not progress.in_notebook()
