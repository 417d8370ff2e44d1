"""The curriculum's plan: every topic with its method, steps, gate, training records and held-out
records, read and validated before any training (a mistake in topic 5 stops the run before
topic 1 trains), and each topic's ordinary training config.

A topic's records come from its own ``data`` files (optionally filtered by ``topic``) or from
``data.train`` records whose ``topic`` field names it. Its held-out records come from its ``eval``
files, from ``data.eval`` records of the topic, or else a seeded fraction of its own records
(``data.eval_split`` or ``curriculum.eval_split``). Replay mixes converted records of earlier
topics into a topic's training data (:func:`replay_records`).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from .. import registry
from ..config import Config, GateConfig, TopicConfig, from_dict, set_key
from ..data.jsonl import load_jsonl
from ..data.records import (ChatRecord, KTORecord, PreferenceRecord, PromptRecord, TextRecord,
                            to_json)
from ..errors import ConfigError, DataError
from ..outputs import write_atomic
from ..schedule import resolve_steps

# what each method trains on (mindprint.registry); the first type is what replayed records are
# converted to
_KINDS = {"chat": ChatRecord, "text": TextRecord, "preference": PreferenceRecord, "kto": KTORecord,
          "prompt": PromptRecord}
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


# -- data ----------------------------------------------------------------------------------------
def _load(paths, cfg: Config) -> list:
    """Every record of ``paths``; a bad line stops the run with file:line (before any training)."""
    out = []
    for p in paths:
        if not Path(p).exists():
            raise DataError(f"{p}: no such data file")
        out += load_jsonl(p, None, system_prompt=cfg.data.system_prompt,
                          max_error_rate=cfg.data.max_error_rate,
                          columns=cfg.data.columns or None).records
    return out


def fits(record, method: str) -> bool:
    return isinstance(record, TRAINS_ON[method])


def _as_replay(record, method: str):
    """``record`` in a form ``method`` trains on, or None. The voice side of a pair or of a
    desirable KTO example is a chat example; a pair also serves KTO; for GRPO any record with the
    person's answer is a prompt whose reference ``answer`` that is."""
    if fits(record, method):
        return record
    if TRAINS_ON[method][0] is PromptRecord:
        found = voice_prompts([record])
        return found[0] if found else None
    if TRAINS_ON[method][0] is ChatRecord:
        if isinstance(record, PreferenceRecord):
            return ChatRecord(record.prompt + record.chosen, record.topic, record.where,
                              record.tools)
        if isinstance(record, KTORecord) and record.label:
            return ChatRecord(record.prompt + record.completion, record.topic, record.where,
                              record.tools)
    return None


def voice_prompts(records) -> list[PromptRecord]:
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
            train = [r for r in records if fits(r, method)]
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
        if not spec.steps:      # train.epochs → steps (schedule.resolve_steps), per topic
            t = cfg.train
            steps = resolve_steps(len(train), t.batch_size, t.grad_accum, 1, t.epochs,
                                  t.max_steps if "max_steps" in t.model_fields_set else None,
                                  default_steps=t.max_steps).steps
        topics.append(Topic(i, spec, method, steps, gate, train, held))
    return topics


def write_jsonl(path: Path, records) -> Path:
    write_atomic(path, "".join(json.dumps(to_json(r), ensure_ascii=False) + "\n" for r in records))
    return path


def replay_records(topic: Topic, earlier: list[Topic], fraction: float, seed: int) -> list:
    pool = [x for t in earlier for r in t.train if (x := _as_replay(r, topic.method)) is not None]
    n = min(len(pool), math.ceil(fraction * len(topic.train))) if fraction > 0 else 0
    return random.Random(seed * 1000 + topic.index).sample(pool, n) if n else []


def topic_config(cfg: Config, topic: Topic, tdir: Path) -> Config:
    """The ordinary training config of one topic (its data written into the topic directory)."""
    raw = cfg.to_dict()
    raw.pop("curriculum", None)
    loop_eval = [r for r in topic.held_out if fits(r, topic.method)]
    raw["method"] = topic.method
    raw["data"].update(train=[str(tdir / "data" / "train.jsonl")],
                       eval=[str(tdir / "data" / "eval.jsonl")] if loop_eval else [],
                       format="auto", eval_split=0.0)
    raw["train"]["max_steps"] = topic.steps
    raw["train"]["epochs"] = None      # already turned into the topic's steps by plan()
    raw["output_dir"] = str(tdir)
    for key, value in topic.spec.overrides.items():
        set_key(raw, key, value, f"curriculum.topics[{topic.index}].overrides")
    return from_dict(raw, f"curriculum.topics[{topic.index}] ({topic.name})")
