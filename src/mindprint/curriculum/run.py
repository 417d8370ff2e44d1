"""The curriculum run: topic after topic, each an ordinary training run started from the previous
topic's adapter, then its gate; retries, resume and the final outputs (:mod:`.report`)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..config import Config, dump_yaml
from ..errors import MindprintError
from ..outputs import write_atomic
from ..evaluate.probe import VoiceProbe
from ..training import run_training
from .gate import evaluate_topic, gate_result
from .plan import fits, plan, replay_records, topic_config, write_jsonl
from .report import SUMMARY, TABLE, fmt, finish
from .state import STATE, State


def run_curriculum(cfg: Config, *, resume: bool = False, overwrite: bool = False, log=print) -> dict:
    # each topic is an ordinary run of the configured backend, started from the previous topic's
    # PEFT-format adapter; topic evaluation loads that adapter through torch on either backend
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
        replay = replay_records(topic, topics[:topic.index], cfg.curriculum.replay, cfg.train.seed)
        tcfg = topic_config(cfg, topic, tdir)
        while True:
            tcfg.train.max_steps = st["steps"]
            if st["status"] in ("pending", "training"):
                fresh = st["status"] == "pending" or not (tdir / "checkpoints").exists()
                if fresh:
                    write_jsonl(tdir / "data" / "train.jsonl", topic.train + replay)
                    loop_eval = [r for r in topic.held_out if fits(r, topic.method)]
                    if loop_eval:
                        write_jsonl(tdir / "data" / "eval.jsonl", loop_eval)
                st["status"] = "training"
                state.save()
                log(f"topic {topic.index + 1}/{len(topics)} '{topic.name}': {topic.method}, "
                    f"{len(topic.train)} examples + {len(replay)} replayed, to step {st['steps']}"
                    f"{' (resuming)' if not fresh else ''}")
                res = run_training(tcfg, resume=not fresh, overwrite=fresh, log=log,
                                   init_adapter=None if not fresh else prev_adapter,
                                   voice_probe=VoiceProbe)
                st.update(status="trained", train={k: res.get(k) for k in (
                    "steps", "train_loss", "first_eval_loss", "final_eval_loss", "wall_s",
                    "tokens_per_s", "stopped")}, replayed=len(replay), examples=len(topic.train))
                state.save()
            ev = evaluate_topic(cfg, topic, tdir, log)
            why = gate_result(topic.gate, ev)
            st.update(eval=ev, why=why)
            log(f"topic '{topic.name}': voice match {fmt(ev.get('voice_match'), '.3f')} "
                f"(base {fmt(ev.get('base_voice_match'), '.3f')}), content similarity "
                f"{fmt(ev.get('content_similarity'))} (base {fmt(ev.get('base_content_similarity'))})"
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
