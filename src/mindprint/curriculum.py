"""Topic curriculum: train one adapter topic by topic, with an evaluation gate after each.

    curriculum:
      replay: 0.2                      # earlier topics' examples mixed in (fraction of this topic's)
      gate: {min_voice_fidelity: 0.4, on_fail: retry, max_retries: 1}
      topics:
        - {name: cycles, method: sft, steps: 40}            # records of data.train with topic: cycles
        - {name: risk, method: kl_sft, steps: 30, overrides: {kl.lambda: 1.0}}
        - {name: craft, method: dpo, data: craft_pairs.jsonl, eval: craft_pairs_eval.jsonl}

Each topic is an ordinary run of the one training loop in ``<output_dir>/topics/NN-name/`` (its own
config.yaml, checkpoints, metrics, adapter and eval report), started from the previous topic's
adapter. Its data is written next to it (``data/train.jsonl``, ``data/eval.jsonl``) after every
source file was validated, so a topic run is self-contained and reproducible. After training,
``mindprint eval`` machinery scores the topic's held-out split for the tuned adapter and the base
model; the gate compares the numbers with its thresholds.

``curriculum_state.json`` records each topic's phase (training → trained → done/failed) and is
replaced atomically, so ``--resume`` continues at the right topic, and inside a topic from its last
checkpoint. The result: ``curriculum_summary.json``, ``curriculum.md`` (the per-topic table) and
``adapter/`` (the last trained topic's adapter) in the output directory.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import registry
from .config import Config, GateConfig, TopicConfig, from_dict, set_key
from .data.jsonl import load_jsonl
from .data.records import ChatRecord, KTORecord, PreferenceRecord, PromptRecord, to_json
from .errors import ConfigError, DataError, MindprintError
from .outputs import write_atomic

STATE = "curriculum_state.json"
SUMMARY = "curriculum_summary.json"
TABLE = "curriculum.md"

# what each method trains on (mindprint.registry); the first type is what replayed records are
# converted to
_KINDS = {"chat": ChatRecord, "preference": PreferenceRecord, "kto": KTORecord, "prompt": PromptRecord}
TRAINS_ON = {n: tuple(_KINDS[k] for k in s.trains_on) for n, s in registry.METHODS.items()}
# preference accuracy the gate reads: reference-free methods score log-probs, the others the
# implicit reward (log-ratio to the base model)
PREF_METRIC = {n: s.pref_metric for n, s in registry.METHODS.items()}


@dataclass
class Topic:
    index: int
    spec: TopicConfig
    method: str
    steps: int
    gate: GateConfig
    train: list = field(default_factory=list)      # records of this topic (no replay)
    held_out: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dirname(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
        return f"{self.index + 1:02d}-{safe}"


# -- data --------------------------------------------------------------------------------------
def _load(paths, cfg: Config) -> list:
    """Every record of ``paths``; a bad line stops the run with file:line (before any training)."""
    out = []
    for p in paths:
        if not Path(p).exists():
            raise DataError(f"{p}: no such data file")
        out += load_jsonl(p, None, system_prompt=cfg.data.system_prompt,
                          max_error_rate=cfg.data.max_error_rate).records
    return out


def _fits(record, method: str) -> bool:
    return isinstance(record, TRAINS_ON[method])


def _as_replay(record, method: str):
    """``record`` in a form ``method`` trains on, or None. The voice side of a pair or of a
    desirable KTO example is a chat example; a pair also serves KTO; for GRPO any record with the
    person's answer is a prompt whose reference ``answer`` that is."""
    if _fits(record, method):
        return record
    if TRAINS_ON[method][0] is PromptRecord:
        found = _voice_prompts([record])
        return found[0] if found else None
    if TRAINS_ON[method][0] is ChatRecord:
        if isinstance(record, PreferenceRecord):
            return ChatRecord(record.prompt + record.chosen, record.topic, record.where)
        if isinstance(record, KTORecord) and record.label:
            return ChatRecord(record.prompt + record.completion, record.topic, record.where)
    return None


def _voice_prompts(records) -> list[PromptRecord]:
    """Held-out prompts with the person's answer, from any record that has one."""
    out = []
    for r in records:
        if isinstance(r, ChatRecord):
            if r.messages[-2].role != "user":
                continue
            out.append(PromptRecord(r.messages[:-1], r.messages[-1].content, r.topic, r.where))
        elif isinstance(r, PreferenceRecord):
            out.append(PromptRecord(r.prompt, "\n".join(m.content for m in r.chosen), r.topic, r.where))
        elif isinstance(r, KTORecord) and r.label:
            out.append(PromptRecord(r.prompt, "\n".join(m.content for m in r.completion), r.topic,
                                    r.where))
        elif isinstance(r, PromptRecord) and r.answer:
            out.append(r)
    return out


def plan(cfg: Config) -> list[Topic]:
    """Topics with their records, validated up front: every mistake is reported before training."""
    cur = cfg.curriculum
    shared_train = _load(cfg.data.train, cfg) if any(not t.data for t in cur.topics) else []
    shared_eval = _load(cfg.data.eval, cfg)
    found = sorted({r.topic for r in shared_train if r.topic})
    topics = []
    for i, spec in enumerate(cur.topics):
        where = f"curriculum.topics[{i}] ({spec.name})"
        method = spec.method or cfg.method
        gate = spec.gate or cur.gate
        steps = spec.steps or cfg.train.max_steps
        label = spec.topic or spec.name
        if spec.data:
            records = _load(spec.data, cfg)
            if spec.topic:
                records = [r for r in records if r.topic == spec.topic]
                if not records:
                    raise ConfigError(f"{where}: no record of {', '.join(spec.data)} has topic "
                                      f"'{spec.topic}'")
        else:
            if not cfg.data.train:
                raise ConfigError(f"{where}: give the topic's data files, or data.train with "
                                  "records whose `topic` field names it")
            records = [r for r in shared_train if r.topic == label]
            if not records:
                have = f"; topics found: {', '.join(found)}" if found else \
                    "; no record there has a `topic` field"
                raise ConfigError(f"{where}: no record of data.train has topic '{label}'{have}")
        if method == "grpo":      # a topic's chats and pairs are prompts with the person's answer
            train = [x for r in records if (x := _as_replay(r, method)) is not None]
        else:
            train = [r for r in records if _fits(r, method)]
        if not train:
            kinds = sorted({type(r).__name__ for r in records})
            raise ConfigError(f"{where}: method {method} needs "
                              f"{' or '.join(t.__name__ for t in TRAINS_ON[method])} data; this "
                              f"topic's records are {', '.join(kinds)}")
        if spec.eval:
            held = _load(spec.eval, cfg)
            if spec.topic:
                held = [r for r in held if r.topic == spec.topic]
        else:
            held = [r for r in shared_eval if r.topic == label]
            if not held:       # hold out a seeded fraction of the topic's own data
                idx = list(range(len(train)))
                random.Random(cfg.train.seed + i).shuffle(idx)
                k = max(1, round(len(train) * (cfg.data.eval_split or cur.eval_split)))
                if k >= len(train):
                    raise ConfigError(f"{where}: {len(train)} record(s) are too few to hold some out; "
                                      "give the topic an eval file")
                keep = set(idx[k:])
                held = [train[j] for j in idx[:k]]
                train = [r for j, r in enumerate(train) if j in keep]
        topics.append(Topic(i, spec, method, steps, gate, train, held))
    return topics


def _write_jsonl(path: Path, records) -> Path:
    write_atomic(path, "".join(json.dumps(to_json(r), ensure_ascii=False) + "\n" for r in records))
    return path


def _replay(topic: Topic, earlier: list[Topic], fraction: float, seed: int) -> list:
    pool = [x for t in earlier for r in t.train if (x := _as_replay(r, topic.method)) is not None]
    n = min(len(pool), math.ceil(fraction * len(topic.train))) if fraction > 0 else 0
    return random.Random(seed * 1000 + topic.index).sample(pool, n) if n else []


def topic_config(cfg: Config, topic: Topic, tdir: Path) -> Config:
    """The ordinary training config of one topic (its data written into the topic directory)."""
    raw = cfg.to_dict()
    raw.pop("curriculum", None)
    loop_eval = [r for r in topic.held_out if _fits(r, topic.method)]
    raw["method"] = topic.method
    raw["data"].update(train=[str(tdir / "data" / "train.jsonl")],
                       eval=[str(tdir / "data" / "eval.jsonl")] if loop_eval else [],
                       format="auto", eval_split=0.0)
    raw["train"]["max_steps"] = topic.steps
    raw["output_dir"] = str(tdir)
    for key, value in topic.spec.overrides.items():
        set_key(raw, key, value, f"curriculum.topics[{topic.index}].overrides")
    return from_dict(raw, f"curriculum.topics[{topic.index}] ({topic.name})")


# -- state -------------------------------------------------------------------------------------
class State:
    def __init__(self, root: Path, topics: list[Topic]):
        self.path = root / STATE
        self.topics = {t.name: {"status": "pending", "attempts": 0, "steps": t.steps}
                       for t in topics}

    def load(self) -> None:
        saved = json.loads(self.path.read_text())["topics"]
        if list(saved) != list(self.topics):
            raise MindprintError(f"{self.path}: written for topics {list(saved)}, the config now lists "
                                 f"{list(self.topics)}; resume with the same curriculum or --overwrite")
        self.topics = saved

    def save(self) -> None:
        write_atomic(self.path, json.dumps({"topics": self.topics}, indent=2))

    def __getitem__(self, name: str) -> dict:
        return self.topics[name]


# -- the gate ----------------------------------------------------------------------------------
def evaluate_topic(cfg: Config, topic: Topic, tdir: Path, log) -> dict:
    """Voice fidelity (and perplexity / preference accuracy where the held-out split has chats /
    pairs) of the topic's adapter and of the base model, through ``mindprint eval``'s runner."""
    from .evaluate.runner import EvalJob, run_eval

    files = {"prompts": _voice_prompts(topic.held_out),
             "chat": [r for r in topic.held_out if isinstance(r, ChatRecord)],
             "preference": [r for r in topic.held_out if isinstance(r, PreferenceRecord)]}
    paths = {k: [str(_write_jsonl(tdir / "data" / f"heldout_{k}.jsonl", v))] if v else []
             for k, v in files.items()}
    ecfg = cfg.eval.model_copy(update={**paths, "compare_base": True, "every": 0})
    report = run_eval(EvalJob(cfg=ecfg, out=tdir / "eval", adapter=str(tdir / "adapter"),
                              max_length=cfg.data.max_length, system_prompt=cfg.data.system_prompt),
                      log=lambda s: log(f"  eval {s}"))
    s = report["summary"]
    pref_key = PREF_METRIC[topic.method]
    out = {"n_prompts": len(files["prompts"][:ecfg.max_prompts]), "n_pairs": len(files["preference"])}
    for key, name in (("voice_fidelity", "voice_fidelity"), ("perplexity", "perplexity"),
                      (pref_key, "pref_accuracy")):
        if key in s.get("tuned", {}):
            out[name] = s["tuned"][key]
            out[f"base_{name}"] = s["base"].get(key)
    return out


def gate_result(gate: GateConfig, ev: dict) -> list[str]:
    """Reasons the gate fails (empty: passed)."""
    why = []
    if gate.min_voice_fidelity is not None:
        v = ev.get("voice_fidelity")
        if v is None:
            why.append("no held-out answers to measure voice fidelity")
        elif v < gate.min_voice_fidelity:
            why.append(f"voice fidelity {v:.4f} < min_voice_fidelity {gate.min_voice_fidelity}")
    if gate.min_gain_over_base is not None:
        v, b = ev.get("voice_fidelity"), ev.get("base_voice_fidelity")
        if v is None or b is None:
            why.append("no held-out answers to compare voice fidelity with the base model's")
        elif v - b < gate.min_gain_over_base:
            why.append(f"voice fidelity {v:.4f} is not {gate.min_gain_over_base} above the base "
                       f"model's {b:.4f}")
    if gate.min_pref_accuracy is not None and ev.get("pref_accuracy") is not None \
            and ev["pref_accuracy"] < gate.min_pref_accuracy:
        why.append(f"preference accuracy {ev['pref_accuracy']:.3f} < min_pref_accuracy "
                   f"{gate.min_pref_accuracy}")
    return why


# -- the run -----------------------------------------------------------------------------------
def run_curriculum(cfg: Config, *, resume: bool = False, overwrite: bool = False, log=print) -> dict:
    # each topic is an ordinary run of the configured backend, started from the previous topic's
    # PEFT-format adapter; topic evaluation loads that adapter through torch on either backend
    if cfg.backend == "mlx":
        from .backends.mlx.train import run_training
    else:
        from .backends.torch.train import run_training

    root = Path(cfg.output_dir)
    topics = plan(cfg)
    state = State(root, topics)
    if (root / STATE).exists() or (root / "topics").exists():
        if resume:
            state.load()
        elif overwrite:
            for name in ("topics", "adapter", STATE, SUMMARY, TABLE, "config.yaml",
                         "curriculum.html", "curriculum-plots"):
                p = root / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        else:
            raise MindprintError(f"{root} already holds a curriculum run: pass --resume to continue "
                                 "it, --overwrite to replace it, or choose another output_dir")
    elif resume:
        raise MindprintError(f"--resume: no curriculum run in {root}")
    root.mkdir(parents=True, exist_ok=True)
    from .config import dump_yaml

    write_atomic(root / "config.yaml", dump_yaml(cfg))
    state.save()
    t0 = time.monotonic()
    prev_adapter: Path | None = None
    stopped = None
    for topic in topics:
        st = state[topic.name]
        tdir = root / "topics" / topic.dirname
        if st["status"] in ("done", "failed"):
            prev_adapter = tdir / "adapter"
            continue
        if st["status"] == "stopped":
            raise MindprintError(f"the curriculum stopped at topic '{topic.name}' "
                                 f"({'; '.join(st.get('why', []))}); change its gate or steps and "
                                 "start again with --overwrite")
        replay = _replay(topic, topics[:topic.index], cfg.curriculum.replay, cfg.train.seed)
        tcfg = topic_config(cfg, topic, tdir)
        while True:
            tcfg.train.max_steps = st["steps"]
            if st["status"] in ("pending", "training"):
                fresh = st["status"] == "pending" or not (tdir / "checkpoints").exists()
                if fresh:
                    _write_jsonl(tdir / "data" / "train.jsonl", topic.train + replay)
                    loop_eval = [r for r in topic.held_out if _fits(r, topic.method)]
                    if loop_eval:
                        _write_jsonl(tdir / "data" / "eval.jsonl", loop_eval)
                st["status"] = "training"
                state.save()
                log(f"topic {topic.index + 1}/{len(topics)} '{topic.name}': {topic.method}, "
                    f"{len(topic.train)} examples + {len(replay)} replayed, to step {st['steps']}"
                    f"{' (resuming)' if not fresh else ''}")
                res = run_training(tcfg, resume=not fresh, overwrite=fresh, log=log,
                                   init_adapter=None if not fresh else prev_adapter)
                st.update(status="trained", train={k: res.get(k) for k in (
                    "steps", "train_loss", "first_eval_loss", "final_eval_loss", "wall_s",
                    "tokens_per_s", "stopped")}, replayed=len(replay), examples=len(topic.train))
                state.save()
            ev = evaluate_topic(cfg, topic, tdir, log)
            why = gate_result(topic.gate, ev)
            st.update(eval=ev, why=why)
            log(f"topic '{topic.name}': voice fidelity {_f(ev.get('voice_fidelity'))} "
                f"(base {_f(ev.get('base_voice_fidelity'))})"
                + (f"; gate failed: {'; '.join(why)}" if why else ""))
            if not why:
                st["status"] = "done"
                break
            g = topic.gate
            if g.on_fail == "retry" and st["attempts"] < g.max_retries:
                st["attempts"] += 1
                extra = g.retry_steps or max(1, topic.steps // 2)
                st.update(status="training", steps=st["steps"] + extra)
                state.save()
                log(f"topic '{topic.name}': retry {st['attempts']}/{g.max_retries} with {extra} "
                    "more steps")
                continue
            st["status"] = "failed" if g.on_fail == "continue" else "stopped"
            break
        state.save()
        prev_adapter = tdir / "adapter"
        if st["status"] == "stopped":
            stopped = topic.name
            break
    return finish(cfg, root, topics, state, prev_adapter, stopped, time.monotonic() - t0, log)


def _f(v, spec=".4f") -> str:
    return "–" if v is None else format(v, spec)


def finish(cfg, root: Path, topics, state, last_adapter, stopped, wall, log) -> dict:
    from .backends.torch.model import atomic_dir

    if last_adapter is not None and last_adapter.exists():
        with atomic_dir(root / "adapter") as tmp:
            for f in last_adapter.iterdir():
                shutil.copy2(f, tmp / f.name)
    rows = []
    for t in topics:
        st = state[t.name]
        rows.append({"topic": t.name, "method": t.method, "status": st["status"],
                     "steps": st["steps"], "attempts": st["attempts"],
                     "examples": st.get("examples"), "replayed": st.get("replayed"),
                     "train": st.get("train"), "eval": st.get("eval"), "gate_failures": st.get("why"),
                     "run_dir": str(root / "topics" / t.dirname)})
    summary = {"topics": rows, "stopped_at": stopped,
               "completed": all(r["status"] in ("done", "failed") for r in rows),
               "adapter": str(root / "adapter") if (root / "adapter").exists() else None,
               "output_dir": str(root), "wall_s": wall}
    write_atomic(root / SUMMARY, json.dumps(summary, indent=2))
    table = summary_table(rows)
    write_atomic(root / TABLE, "# Curriculum\n\n" + "\n".join(table) + "\n")
    try:
        write_html(root, rows, table)
    except ImportError:       # matplotlib missing: the table is still there
        pass
    for line in table:
        log(line)
    return summary


def write_html(root: Path, rows: list[dict], table: list[str]) -> None:
    """curriculum.html: voice fidelity per topic (adapter vs base model) as bars, the training loss
    across all topics with the topic boundaries marked, and the per-topic table."""
    import html

    from .evaluate.report import _plt, _save

    plt = _plt()
    plots = root / "curriculum-plots"
    done = [r for r in rows if (r.get("eval") or {}).get("voice_fidelity") is not None]
    figs = []
    if done:
        fig, ax = plt.subplots(figsize=(7.2, 3.0))
        xs = range(len(done))
        ax.bar([x - 0.2 for x in xs], [r["eval"].get("base_voice_fidelity") or 0 for r in done], 0.4,
               label="base model", color="#9aa5b1")
        ax.bar([x + 0.2 for x in xs], [r["eval"]["voice_fidelity"] for r in done], 0.4,
               label="with the adapter", color="#2f6fb0")
        ax.set_xticks(list(xs), [f"{r['topic']}\n({r['method']})" for r in done])
        ax.set_ylabel("voice fidelity")
        ax.set_title("voice fidelity on each topic's held-out questions")
        ax.legend(fontsize=8)
        figs.append(_save(fig, plt, plots, "voice_fidelity"))
    fig, ax = plt.subplots(figsize=(7.2, 3.0))
    offset, drawn = 0, False
    for r in rows:
        mfile = Path(r["run_dir"]) / "metrics.jsonl"
        if not mfile.exists():
            continue
        pts = [(m["step"], m["loss"]) for m in map(json.loads, mfile.read_text().splitlines())
               if "loss" in m]
        if not pts:
            continue
        ax.plot([offset + s for s, _ in pts], [v for _, v in pts], linewidth=1.2, label=r["topic"])
        ax.axvline(offset, color="#bbb", linewidth=0.8)
        offset += pts[-1][0]
        drawn = True
    if drawn:
        ax.set_xlabel("step (all topics)")
        ax.set_ylabel("training loss")
        ax.set_title("training loss, topic after topic")
        ax.legend(fontsize=8)
        figs.append(_save(fig, plt, plots, "loss"))
    else:
        plt.close(fig)
    head, *body = [ln.strip("|").split("|") for ln in table if not ln.startswith("|---")]
    cells = lambda row, tag: "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in row)  # noqa: E731
    page = ("<!doctype html><meta charset='utf-8'><title>Curriculum</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            "td,th{padding:.2em .6em;border-bottom:1px solid #ddd}</style><h1>Curriculum</h1>"
            + "".join(f"<p><img src='curriculum-plots/{f}.svg' alt='{f}'></p>" for f in figs)
            + f"<table><tr>{cells(head, 'th')}</tr>"
            + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in body) + "</table>")
    write_atomic(root / "curriculum.html", page)


def summary_table(rows: list[dict]) -> list[str]:
    head = ["topic", "method", "status", "steps", "voice fid.", "base", "ppl", "base ppl",
            "pref acc", "base"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ev = r.get("eval") or {}
        cells = [r["topic"], r["method"], r["status"], str(r["steps"]),
                 _f(ev.get("voice_fidelity")), _f(ev.get("base_voice_fidelity")),
                 _f(ev.get("perplexity"), ".2f"), _f(ev.get("base_perplexity"), ".2f"),
                 _f(ev.get("pref_accuracy"), ".3f"), _f(ev.get("base_pref_accuracy"), ".3f")]
        out.append("| " + " | ".join(cells) + " |")
    return out

