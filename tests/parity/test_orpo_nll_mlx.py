"""``orpo.nll: prompt_and_answer`` on mlx: the extra prompt + chosen pass (``backend.token_logps``)
gives the torch loss and LoRA gradients on identical weights and data, with the tolerances of
test_backend_parity (the default ``answer`` mode is covered there)."""

from __future__ import annotations

import mlx.core  # noqa: F401  (required: no silent skip when mlx is missing)

from parity_helpers import pref_file  # noqa: F401  (fixture)
from test_backend_parity import _cfg, _check, _losses


def test_orpo_prompt_and_answer_loss_and_grads_match(
        tiny_model_dir, pref_file, tmp_path, monkeypatch):  # noqa: F811  (pref_file: fixture)
    monkeypatch.setenv("MINDPRINT_CACHE", str(tmp_path / "cache"))
    cfg = _cfg(tiny_model_dir, pref_file, "orpo", tmp_path / "run",
               orpo={"nll": "prompt_and_answer", "lam": 0.25})
    tl, ml, tg, mg, tm, mm = _losses(cfg, tiny_model_dir)
    _check(tl, ml, tg, mg, tm, mm)
    # and it is not the answer-only objective
    answer = _losses(_cfg(tiny_model_dir, pref_file, "orpo", tmp_path / "run2",
                          orpo={"lam": 0.25}), tiny_model_dir)
    assert abs(answer[0] - tl) > 1e-3
