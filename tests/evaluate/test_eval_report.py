"""mindprint eval and compare on the tiny model: the numbers are sane, the report complete, and
two runs (API and CLI) give the same report."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from conftest import PERSONA, make_adapter
from mindprint.cli import main
from mindprint.config import EvalConfig
from mindprint.evaluate.runner import EvalJob, run_eval
from mindprint.measures.diversity import diversity
from mindprint.measures.voice_data import person_texts

SETTINGS = {"max_prompts": 3, "max_records": 4, "max_new_tokens": 8, "batch_size": 4}


@pytest.fixture(scope="module")
def api_report(tiny_adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "api"
    cfg = EvalConfig(prompts=[str(PERSONA / "prompts_eval.jsonl")],
                     chat=[str(PERSONA / "persona_eval.jsonl")],
                     preference=[str(PERSONA / "preference_eval.jsonl")], **SETTINGS)
    return out, run_eval(EvalJob(cfg, out, adapter=tiny_adapter, max_length=256,
                                 person=[str(PERSONA / "persona_train.jsonl")]))


def test_report_numbers_are_sane(api_report):
    out, r = api_report
    assert r["variants"] == ["base", "tuned"]
    assert r["data"]["n_prompts"] == 3 and r["data"]["n_chat"] == 4 and r["data"]["n_pairs"] == 4
    for v in ("base", "tuned"):
        s = r["summary"][v]
        assert -1.0 <= s["content_similarity"] <= 1.0
        # the tiny random model's answers do not sound like the persona
        assert 0.0 <= s["voice_match"] < 0.5 and 0.0 <= s["voice_attribution"] <= 1.0
        assert s["verifier_auc"] == r["voice_score"]["verifier_auc"] >= 0.9
        # what the voice cost, from this variant's answers (None where they hold no words)
        texts = [row["answers"][v]["text"] for row in r["voice"]]
        assert {k: s[k] for k in ("distinct_1", "distinct_2", "loop_share")} == diversity(texts)
        assert 0 <= s["loop_share"] <= 1
        # checked against transformers' own loss in test_perplexity_matches_transformers_own_loss
        assert s["perplexity"] > 1.0
        assert 0.0 <= s["logp_accuracy"] <= 1.0 and 0.0 <= s["avg_logp_accuracy"] <= 1.0
        assert 0.0 <= s["markdown_adherence"] <= 1.0
        assert s["gen_tokens_per_s"] > 0 and 0 < s["answer_tokens_mean"] <= 8
    assert "implicit_accuracy" in r["summary"]["tuned"]
    assert "implicit_accuracy" not in r["summary"]["base"]
    # the adapter changes the model: perplexities differ; the base is its own reference
    assert r["summary"]["base"]["perplexity"] != r["summary"]["tuned"]["perplexity"]
    row = r["voice"][0]
    assert row["reference"].startswith("Zoom out.")
    assert set(row["answers"]) == {"base", "tuned"}
    assert {"text", "similarity", "voice_p", "words", "tokens", "list", "heading", "banned"} <= set(row["answers"]["base"])
    assert r["voice_score"]["person"] == [str(PERSONA / "persona_train.jsonl")]
    # every assistant turn of the training chats is the person's
    assert r["voice_score"]["n_person"] == len(person_texts([PERSONA / "persona_train.jsonl"])[0])
    assert r["voice_score"]["warning"] is None
    assert len(r["preference"]) == 4 and "margin" in r["preference"][0]["tuned"]
    assert len(r["perplexity"]) == 4 and {"base", "tuned"} <= set(r["perplexity"][0])


def test_perplexity_matches_transformers_own_loss(api_report, tiny_model_dir, tiny_adapter,
                                                   tokenizer):
    """The reported NLL / perplexity, recomputed independently of mindprint's log-prob code
    (chunked logsumexp, oneDNN head, padded batches): transformers' own cross-entropy
    (``labels`` = the ids, -100 off the assistant tokens) on each record alone, base and tuned
    (PEFT loading the adapter). Same float32 arithmetic up to summation order: measured relative
    gaps <= 1.2e-7 (float32 epsilon); bound 1e-5. The per-record NLLs of this random model differ
    by ~1e-3 relative, so a shifted target or a wrong mask would not pass."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mindprint.data.render import render_chat_records
    from mindprint.evaluate.data import load_chat

    _, r = api_report
    chat = load_chat([str(PERSONA / "persona_eval.jsonl")], limit=SETTINGS["max_records"])
    assert [c.where for c in chat] == [row["where"] for row in r["perplexity"]]
    rendered, _ = render_chat_records(tokenizer, chat, 256)

    def load():
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()

    for v, model in (("base", load()), ("tuned", PeftModel.from_pretrained(load(), tiny_adapter))):
        nll_sum = n_sum = 0.0
        for row, x in zip(r["perplexity"], rendered, strict=True):
            ids = torch.tensor([x.input_ids])
            labels = ids.masked_fill(torch.tensor([x.loss_mask]) == 0, -100)
            with torch.no_grad():
                nll = float(model(input_ids=ids, labels=labels).loss)   # mean over the targets
            assert row[v]["tokens"] == x.n_target > 0
            assert row[v]["nll"] == pytest.approx(nll, rel=1e-5)
            assert row[v]["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
            nll_sum, n_sum = nll_sum + nll * x.n_target, n_sum + x.n_target
        assert r["summary"][v]["nll"] == pytest.approx(nll_sum / n_sum, rel=1e-5)
        assert r["summary"][v]["perplexity"] == pytest.approx(math.exp(nll_sum / n_sum), rel=1e-5)


def test_report_files(api_report):
    out, r = api_report
    assert json.loads((out / "report.json").read_text())["summary"] == r["summary"]
    html = (out / "report.html").read_text()
    assert "voice match" in html and "content similarity" in html and "held-out AUC" in html
    assert "<svg" in html and "tuned − base" in html
    for stem in ("summary", "content_similarity", "answer_length"):
        assert (out / "plots" / f"{stem}.png").stat().st_size > 1000
        assert (out / "plots" / f"{stem}.svg").is_file()


def _strip_timing(r: dict) -> dict:
    r = json.loads(json.dumps(r))
    r.pop("timing")
    for v in r["summary"].values():
        v.pop("gen_tokens_per_s")
    return r


def test_cli_with_a_config_gives_the_same_report(api_report, tiny_adapter, tiny_model_dir, tmp_path):
    out, r = api_report
    cfg = {"model": tiny_model_dir, "output_dir": str(tmp_path / "run"),
           "data": {"train": str(PERSONA / "persona_train.jsonl"), "max_length": 256,
                    "eval": str(PERSONA / "persona_eval.jsonl")},
           "eval": {"prompts": str(PERSONA / "prompts_eval.jsonl"),
                    "preference": str(PERSONA / "preference_eval.jsonl"), **SETTINGS}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out2 = tmp_path / "cli"
    assert main(["eval", str(path), "--adapter", tiny_adapter, "--out", str(out2)]) == 0
    r2 = json.loads((out2 / "report.json").read_text())
    # eval.chat defaulted to data.eval; greedy decoding: identical apart from timings
    assert r2["data"]["chat"] == [str(PERSONA / "persona_eval.jsonl")]
    assert _strip_timing(r2) == _strip_timing(json.loads((out / "report.json").read_text()))
    # the plots are byte-identical too
    for name in ("summary.svg", "content_similarity.png"):
        assert (out2 / "plots" / name).read_bytes() == (out / "plots" / name).read_bytes()


def test_eval_without_data_is_a_one_line_error(tiny_adapter, tmp_path, capsys):
    assert main(["eval", "--adapter", tiny_adapter, "--out", str(tmp_path / "x")]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["eval", "--prompts", "x.txt", "--set", "train.lr=1"]) == 2
    assert "only eval.* keys" in capsys.readouterr().err


def test_compare_writes_html_and_markdown(tiny_adapter, tiny_model_dir, tmp_path, capsys):
    other = make_adapter(tiny_model_dir, tmp_path / "second" / "adapter", seed=1)
    prompts = tmp_path / "p.txt"
    prompts.write_text("Are we near the top?\n\nWhat is | a pipe?\n")
    out = tmp_path / "cmp"
    assert main(["compare", "--adapter", tiny_adapter, "--adapter", other, "--prompts",
                 str(prompts), "--max-new-tokens", "6", "--out", str(out)]) == 0
    res = json.loads((out / "compare.json").read_text())
    assert [r["prompt"] for r in res["rows"]] == ["Are we near the top?", "What is | a pipe?"]
    assert list(res["rows"][0]["answers"]) == ["base", "run", "second"]
    # two different adapters answer differently from each other or from the base
    answers = res["rows"][0]["answers"]
    assert len({answers["base"], answers["run"], answers["second"]}) > 1
    md = (out / "compare.md").read_text()
    assert md.count("| base | run | second |") == 2 and "## 2. What is | a pipe?" in md
    html = (out / "compare.html").read_text()
    assert "<th>second</th>" in html and "Are we near the top?" in html


def test_compare_scores_the_voice_with_person(tiny_adapter, tmp_path, capsys):
    out = tmp_path / "cmp-voice"
    assert main(["compare", "--adapter", tiny_adapter, "--prompts", str(PERSONA / "prompts_eval.jsonl"),
                 "--max-new-tokens", "6", "--out", str(out),
                 "--person", str(PERSONA / "persona_train.jsonl")]) == 0
    res = json.loads((out / "compare.json").read_text())
    v = res["voice"]
    assert set(v["voice_match"]) == {"base", "run", "reference"} and v["verifier_auc"] >= 0.9
    # the persona's own reference answers sound like the persona; the tiny random model does not
    assert v["voice_match"]["reference"] > 0.9 > 0.5 > v["voice_match"]["run"]
    assert all(set(r["voice"]) == {"base", "run", "reference"} for r in res["rows"])
    assert "voice_match (mean P the answer is the person's)" in (out / "compare.md").read_text()
