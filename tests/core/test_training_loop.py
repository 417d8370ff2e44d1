"""The training loop is backend-neutral: it runs a third, pure-Python stepper (one float weight
pulled towards each example's target) with its cadence, checkpoints, exact resume and NaN stop,
and the MLX training path never imports torch."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from mindprint import config as C
from mindprint.backends.common import LOCAL, atomic_dir
from mindprint.errors import TrainingStopped
from mindprint.methods.base import Method
from mindprint.training import Trainer


@dataclass
class _Data:
    train: list
    eval: list
    notes: list = field(default_factory=list)

    @property
    def train_lengths(self) -> list[int]:
        return [1] * len(self.train)


class _Method(Method):
    """Examples are target numbers; the loss of one is (w − target)²."""

    def __init__(self, train, ev):
        self.train, self.ev = train, ev

    def prepare(self, tok):
        return _Data(list(self.train), list(self.ev))

    def weight(self, group):
        return len(group)

    def n_tokens(self, example):
        return 1

    def step_metrics(self, sums):
        return {"mean_target": sums["target_sum"] / sums["n"]}

    def eval_sums(self, backend, examples):
        return {"sq": sum((backend.w - t) ** 2 for t in examples), "n": float(len(examples))}

    def eval_metrics(self, sums):
        return {"eval_loss": sums["sq"] / sums["n"]}


class _FloatStepper:
    """A stepper with no framework: the 'model' is one float, gradient descent at a fixed rate;
    ``poison_at`` makes that step's loss NaN."""

    name = "float"
    device = "cpu"
    poison_at = None

    @staticmethod
    def world(cfg):
        return LOCAL

    def __init__(self, cfg, method, dist, log=print):
        self.cfg, self.method = cfg, method
        self.w, self.model = 0.0, None

    def load(self, model_ref):
        return "tokenizer"

    def attach(self, init_adapter):
        self.model = self
        return self

    def voice_probe(self, tokenizer, make):
        return make(self.cfg, tokenizer)

    def seed(self, seed):
        pass

    def begin_step(self, step):
        self.index = step

    def step(self, groups, norm, check):
        examples = [t for g in groups for t in g]
        loss = sum((self.w - t) ** 2 for t in examples) / norm
        if self.index + 1 == self.poison_at:
            loss = float("nan")
        check("loss", loss)
        grad = sum(2 * (self.w - t) for t in examples) / norm
        self.w -= self.cfg.train.lr * grad
        return {"loss": loss, "lr": self.cfg.train.lr, "grad_norm": abs(grad),
                "tokens": len(examples), "sums": {"target_sum": float(sum(examples)),
                                                  "n": float(len(examples))}}

    @contextlib.contextmanager
    def inference(self):          # the Backend's eval context (this stepper is its own backend)
        yield

    def save(self, path, state):
        with atomic_dir(path) as tmp:
            (tmp / "w.json").write_text(json.dumps(self.w))
            (tmp / "state.json").write_text(json.dumps(state))

    def load_checkpoint(self, path):
        self.w = json.loads((path / "w.json").read_text())
        return json.loads((path / "state.json").read_text())

    def save_adapter(self, path, meta, run_root):
        path.mkdir(parents=True, exist_ok=True)
        (path / "w.json").write_text(json.dumps({"w": self.w, **meta}))
        return {"float_w": self.w}

    def peak_memory_mb(self):
        return 0.0


TARGETS = [1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 4.0, 6.0]


def _cfg(tmp_path, out, **train):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    t = {"max_steps": 6, "batch_size": 2, "grad_accum": 2, "lr": 0.05, "seed": 7,
         "eval_every": 3, "save_every": 2, "keep_last": 10, "log_every": 1, **train}
    return C.from_dict({"method": "sft", "model": str(model), "data": {"train": "unused.jsonl"},
                        "train": t, "output_dir": str(tmp_path / out)})


def _run(cfg, *, stepper=_FloatStepper, resume=False):
    tr = Trainer(cfg, _Method(TARGETS, [3.0, 7.0]), stepper_cls=stepper, resume=resume,
                 log=lambda s: None, callbacks=[])
    tr.setup()
    return tr, tr.train()


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_framework_free_stepper_runs_the_whole_loop(tmp_path):
    tr, s = _run(_cfg(tmp_path, "r"))
    assert s["backend"] == "float" and s["steps"] == 6 and s["stopped"] == "max_steps"
    assert s["tokens_seen"] == 6 * 4 and s["float_w"] == tr.stepper.w > 0
    steps = [r["step"] for r in _rows(tmp_path / "r") if "loss" in r]
    evals = [r for r in _rows(tmp_path / "r") if "eval_loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6] and [r["step"] for r in evals] == [0, 3, 6]
    # eval loss at w: mean of (w − 3)², (w − 7)²; the loop's own arithmetic round-trips
    w = tr.stepper.w
    assert evals[-1]["eval_loss"] == pytest.approx(((w - 3) ** 2 + (w - 7) ** 2) / 2)
    assert s["final_eval_loss"] == evals[-1]["eval_loss"] and s["first_eval_loss"] == 29.0
    done = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert done == ["step-0000002", "step-0000003", "step-0000004", "step-0000006"]  # 3: best


def test_resume_of_a_framework_free_stepper_equals_an_unbroken_run(tmp_path):
    _, full = _run(_cfg(tmp_path, "full"))
    _run(_cfg(tmp_path, "cut", max_steps=4))
    tr, resumed = _run(_cfg(tmp_path, "cut"), resume=True)
    assert resumed["float_w"] == full["float_w"]          # bit for bit: same data order
    cut = [r for r in _rows(tmp_path / "cut") if "loss" in r]
    assert [r["loss"] for r in cut] == [r["loss"] for r in _rows(tmp_path / "full") if "loss" in r]


def test_a_nan_loss_stops_with_the_last_good_checkpoint(tmp_path):
    class Poisoned(_FloatStepper):
        poison_at = 3

    with pytest.raises(TrainingStopped, match=r"loss became nan at step 3: .*step-0000002"):
        _run(_cfg(tmp_path, "nan"), stepper=Poisoned)


class _Probe:
    """eval.every's probe as the loop sees it: due(step), probe(model) -> row."""

    def __init__(self, cfg, tokenizer):
        self.every, self.tokenizer = cfg.eval.every, tokenizer

    def due(self, step):
        return step % self.every == 0

    def __call__(self, model):
        return {"content_similarity": round(model.w, 6), "tokenizer": self.tokenizer}


def test_the_voice_probe_is_the_callers_and_without_one_eval_every_is_skipped(tmp_path):
    """The training layer builds no probe itself (it generates and scores text: an app's job):
    run_training / Trainer take the caller's factory, and without one they say so and train."""
    cfg = _cfg(tmp_path, "probed", max_steps=4).model_copy(deep=True)
    cfg.eval.every = 2
    notes: list[str] = []
    tr = Trainer(cfg, _Method(TARGETS, [3.0, 7.0]), stepper_cls=_FloatStepper, log=notes.append,
                 callbacks=[], voice_probe=_Probe)
    tr.setup()
    tr.train()
    probes = [r for r in _rows(tmp_path / "probed") if "content_similarity" in r]
    assert [r["step"] for r in probes] == [0, 2, 4] and probes[0]["tokenizer"] == "tokenizer"
    assert not any("without a voice probe" in n for n in notes)
    plain = _cfg(tmp_path, "unprobed", max_steps=4).model_copy(deep=True)
    plain.eval.every = 2
    notes.clear()
    tr = Trainer(plain, _Method(TARGETS, [3.0, 7.0]), stepper_cls=_FloatStepper, log=notes.append,
                 callbacks=[])
    tr.setup()
    s = tr.train()
    assert s["steps"] == 4 and not any("content_similarity" in r
                                       for r in _rows(tmp_path / "unprobed"))
    assert any("eval.every" in n and "without a voice probe" in n for n in notes)


def test_a_method_takes_the_default_hooks_of_the_method_contract():
    """on_setup and rollout are part of the Method Protocol with defaults, so the loop calls them
    unconditionally (no hasattr probe); a method that needs them overrides them."""
    m = _Method(TARGETS, [])
    groups = [[1.0, 2.0], [3.0]]
    assert m.on_setup("backend", "data", print) is None
    assert m.rollout("backend", groups, 0) is groups
    from mindprint.methods import grpo, kto, pairwise, sft

    for cls in (sft.SFTMethod, pairwise.PairMethod, kto.KTOMethod, grpo.GRPOMethod):
        assert Method in cls.__mro__
    assert grpo.GRPOMethod.rollout is not Method.rollout and sft.SFTMethod.rollout is Method.rollout
    assert pairwise.PairMethod.on_setup is not Method.on_setup


def test_the_mlx_training_path_never_imports_torch():
    """No mindprint module on the mlx training path imports torch (mlx-lm itself imports
    transformers, which loads torch where it is installed: that is outside mindprint)."""
    code = ("import sys\n"
            "from mindprint.training import stepper_class\n"
            "stepper_class('mlx')\n"
            "torch = sys.modules.get('torch')\n"
            "ours = {n: m for n, m in sys.modules.items() if n.startswith('mindprint')}\n"
            "assert 'mindprint.backends.mlx.train' in ours and 'mindprint.training.loop' in ours\n"
            "bad = sorted(n for n, m in ours.items() if n.startswith('mindprint.backends.torch')\n"
            "             or torch is not None and any(v is torch for v in vars(m).values()))\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_run_resumed_at_its_last_step_keeps_its_train_loss(tmp_path):
    """Interrupted after its last checkpoint but before the summary: the resumed run trains no
    step, and its summary still has the train loss of the steps before (issue 22)."""
    _, full = _run(_cfg(tmp_path, "last"))
    (tmp_path / "last" / "summary.json").unlink()
    _, resumed = _run(_cfg(tmp_path, "last"), resume=True)
    logged = [r["loss"] for r in _rows(tmp_path / "last") if "loss" in r]
    assert resumed["steps"] == 6 and resumed["train_loss"] == full["train_loss"] == logged[-1]
    assert resumed["train_loss_last10"] == pytest.approx(sum(logged) / len(logged))
