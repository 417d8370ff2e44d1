"""report.html renders the curves of an SFT run and of a DPO-style run."""

from __future__ import annotations

import json
import math

import yaml

from mindprint.cli import main
from mindprint.report import group_series, series, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def charts_of(run_dir) -> dict:
    return {p.stem: p.read_bytes() for p in (run_dir / "report").glob("*.png")}


def assert_real_png(data: bytes) -> None:
    from PIL import Image   # matplotlib's own dependency
    import io

    assert data.startswith(PNG) and len(data) > 8000      # axes, ticks, lines: not a blank tile
    img = Image.open(io.BytesIO(data)).convert("L")
    assert img.size == (640, 340)
    colors = len(set(img.getdata()))
    assert colors > 20                                      # anti-aliased curves and text


def test_sft_report(sft_run, capsys):
    assert main(["report", str(sft_run)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(sft_run / "report.html")
    page = (sft_run / "report.html").read_text()
    charts = charts_of(sft_run)
    for name in ("loss", "perplexity", "lr", "throughput", "grad_norm"):
        assert name in charts, name
        assert_real_png(charts[name])
        assert f'src="report/{name}.png"' in page
    assert "method: sft" in page                          # the config
    assert "manifest.json" in page and "summary.json" in page
    assert "completed" in page


def dpo_like_run(d):
    """A DPO run directory as the loop writes it (train rows with rewards, eval rows with
    preference accuracy), plus the flat key spellings other tools use."""
    d.mkdir()
    cfg = {"method": "dpo", "backend": "torch", "model": {"name": "smollm2-135m-instruct"},
           "data": {"train": ["pairs.jsonl"]}, "train": {"max_steps": 30, "lr": 5e-5},
           "dpo": {"beta": 0.1}, "output_dir": str(d)}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = []
    for step in range(0, 31):
        if step % 10 == 0:
            rows.append({"step": step, "eval_loss": 0.69 - 0.01 * step,
                         "eval_pref_accuracy": 0.5 + 0.015 * step,
                         "eval_rewards/chosen": 0.01 * step, "eval_rewards/rejected": -0.01 * step,
                         "eval_rewards/margin": 0.02 * step, "eval_nll/chosen": 2.0 - 0.01 * step,
                         "eval_ppl_chosen": math.exp(2.0 - 0.01 * step)})
        if step == 0:
            continue
        rows.append({"step": step, "loss": 0.69 - 0.012 * step, "lr": 5e-5 * (1 - step / 31),
                     "grad_norm": 1.0 + 0.1 * math.sin(step), "tokens_per_s": 900 + step,
                     "epoch": 0, "elapsed_s": 2.0 * step,
                     "rewards/chosen": 0.02 * step, "rewards/rejected": -0.015 * step,
                     "rewards/margin": 0.035 * step, "rewards/accuracy": min(1.0, 0.5 + 0.02 * step),
                     "rewards_chosen": 0.02 * step, "reward_margin": 0.035 * step,
                     "reward_accuracy": 0.6, "logps/chosen": -40.0 + step,
                     "logps/rejected": -41.0 - step, "nll/chosen": 1.9, "pairs": 8,
                     "kl": 0.001 * step if step != 13 else "nan"})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps({
        "method": "dpo", "steps": 30, "stopped": "max_steps", "train_loss": 0.33,
        "first_eval_loss": 0.69, "final_eval_loss": 0.39, "wall_s": 61.0,
        "final_eval_metrics": {"eval_loss": 0.39, "eval_pref_accuracy": 0.95}}))
    return d


def test_dpo_report_groups_rewards_and_accuracy(tmp_path):
    run = dpo_like_run(tmp_path / "dpo")
    html_path = write_report(run)
    assert html_path == run / "report.html"
    charts = charts_of(run)
    for name in ("loss", "accuracy", "rewards", "logps", "nll", "perplexity", "kl", "lr",
                 "throughput", "grad_norm"):
        assert name in charts, (name, sorted(charts))
        assert_real_png(charts[name])
    page = html_path.read_text()
    assert "pref acc" in page or "eval_pref_accuracy" in page
    assert "method: dpo" in page and "no manifest" not in page


def test_grouping_of_keys():
    keys = ["loss", "eval_loss", "rewards/chosen", "eval_rewards/margin", "reward_margin",
            "rewards_chosen", "rewards/accuracy", "eval_pref_accuracy", "reward_accuracy",
            "logps/chosen", "nll/chosen", "eval_ppl", "eval_ppl_chosen", "lr", "tokens_per_s",
            "grad_norm", "kl", "pairs", "target_tokens", "kto/z", "kto/y"]
    groups = {gid: ks for gid, _, ks in group_series(keys)}
    assert groups["loss"] == ["loss", "eval_loss"]                  # train first
    assert set(groups["rewards"]) == {"rewards/chosen", "eval_rewards/margin", "reward_margin",
                                      "rewards_chosen"}
    assert set(groups["accuracy"]) == {"rewards/accuracy", "eval_pref_accuracy", "reward_accuracy"}
    assert set(groups["perplexity"]) == {"eval_ppl", "eval_ppl_chosen"}
    assert groups["logps"] == ["logps/chosen"] and groups["nll"] == ["nll/chosen"]
    assert groups["kl"] == ["kl"] and groups["other-kto"] == ["kto/z", "kto/y"]
    assert groups["other-pairs"] == ["pairs"]
    assert not any("epoch" in ks or "step" in ks for ks in groups.values())


def test_series_skips_text_and_keeps_gaps():
    s = series([{"step": 1, "loss": 1.0, "note": "x"}, {"step": 2, "loss": "nan"},
                {"loss": 3.0}, {"step": 3, "loss": 0.5, "flag": True}])
    assert list(s) == ["loss"]
    steps, vals = s["loss"]
    assert steps == [1, 2, 3] and vals[0] == 1.0 and math.isnan(vals[1]) and vals[2] == 0.5


def test_self_contained_report_and_empty_run(tmp_path):
    run = dpo_like_run(tmp_path / "dpo")
    out = write_report(run, self_contained=True, output=tmp_path / "one.html")
    page = out.read_text()
    assert page.count("data:image/png;base64,") >= 8 and not (tmp_path / "report").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    assert "No metrics logged yet" in write_report(empty).read_text()


def test_report_user_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a run directory" in err and "Traceback" not in err
