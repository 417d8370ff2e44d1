"""Topic curriculum: train one adapter topic by topic, with an evaluation gate after each.

    curriculum:
      replay: 0.2                      # earlier topics' examples mixed in (fraction of this topic's)
      gate: {min_voice_match: 0.5, on_fail: retry, max_retries: 1}
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

Modules: :mod:`.plan` (topics, their records and configs, replay), :mod:`.state` (the resumable
state file), :mod:`.gate` (evaluation after each topic), :mod:`.run` (the loop),
:mod:`.report` (summary, table, HTML).
"""

from .gate import evaluate_topic, gate_result
from .plan import _KINDS, PREF_METRIC, TRAINS_ON, Topic, plan, topic_config
from .report import SUMMARY, TABLE, finish, summary_table, write_html
from .run import run_curriculum
from .state import STATE, State

__all__ = ["PREF_METRIC", "STATE", "SUMMARY", "TABLE", "TRAINS_ON", "State", "Topic",
           "evaluate_topic", "finish", "gate_result", "plan", "run_curriculum", "summary_table",
           "topic_config", "write_html", "_KINDS"]
