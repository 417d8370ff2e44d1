"""The whole config (:class:`Config`) with its curriculum sections, every dotted key
(:data:`ALL_KEYS`) and the did-you-mean for unknown ones (:func:`suggest`)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from ..registry import NAMES as METHODS     # the one list of methods (mindprint.registry)
from .method_sections import (DPOConfig, GRPOConfig, KLConfig, KTOConfig, ORPOConfig,
                              SimPOConfig)
from .sections import (BACKENDS, DataConfig, EvalConfig, LoraConfig, ModelConfig, TrainConfig,
                       _renamed, _Section)


class GateConfig(_Section):
    min_content_similarity: float | None = Field(None, ge=-1.0, le=1.0, description="curriculum "
                                                 "gate: lowest content similarity (MiniLM cosine to "
                                                 "the reference; was min_voice_fidelity) on the "
                                                 "topic's held-out split (null: no threshold)")
    min_voice_match: float | None = Field(None, ge=0.0, le=1.0, description="curriculum gate: "
                                          "lowest voice match (mean P the answer is the person's, "
                                          "the voice verifier) on the topic's held-out split "
                                          "(null: no threshold)")
    min_gain_over_base: float | None = Field(None, ge=-1.0, le=1.0, description="curriculum gate: "
                                             "content similarity must beat the base model's on the "
                                             "same split by at least this much (null: no check)")
    min_kept_likelihood_ratio: float | None = Field(
        None, gt=0.0, description="curriculum gate: general ability kept — lowest per-token "
        "probability the adapter gives the base model's answers to the bundled everyday prompts, "
        "relative to the base model (exp of the mean log-prob difference; 1 = nothing lost; "
        "null: no threshold)")
    min_kept_similarity: float | None = Field(None, ge=-1.0, le=1.0, description="curriculum gate: "
                                              "lowest content similarity of the adapter's answers "
                                              "to the everyday prompts to the base model's (null: "
                                              "no threshold)")
    min_pref_accuracy: float | None = Field(None, ge=0.0, le=1.0, description="curriculum gate: "
                                            "lowest preference accuracy where the topic has held-out "
                                            "pairs (null: no threshold)")
    on_fail: Literal["stop", "continue", "retry"] = Field(
        "stop", description="a failed gate: stop the curriculum, continue to the next topic, or retry "
        "the topic with more steps (then stop after max_retries)")
    max_retries: int = Field(1, ge=0, description="retries of a failed topic (on_fail: retry)")
    retry_steps: int | None = Field(None, ge=1, description="extra steps per retry (default: half "
                                    "the topic's steps)")

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, v: Any) -> Any:
        if isinstance(v, dict):
            both = [k for k in RENAMED_GATE_KEYS if k in v and RENAMED_GATE_KEYS[k] in v]
            if both:
                raise ValueError(f"give {RENAMED_GATE_KEYS[both[0]]} or its old name {both[0]}, "
                                 "not both")
            v = {_renamed(k, RENAMED_GATE_KEYS, "curriculum gate key"): x for k, x in v.items()}
        return v


RENAMED_GATE_KEYS = {"min_voice_fidelity": "min_content_similarity"}


class TopicConfig(_Section):
    name: str = Field(..., min_length=1, description="topic name (also its directory name)")
    data: list[str] = Field(default_factory=list, description="this topic's training file(s); empty: "
                            "the records of data.train whose `topic` field is `topic`")
    topic: str | None = Field(None, description="value of the records' `topic` field (default: name); "
                              "with data/eval files, keeps only their records of this topic")
    eval: list[str] = Field(default_factory=list, description="held-out file(s); default: data.eval "
                            "records of this topic, else a data.eval_split (or 10 %) of its data")
    method: Literal[METHODS] | None = Field(None, description="method for this topic (default: "  # type: ignore[valid-type]
                                            "the top-level method)")
    steps: int | None = Field(None, ge=1, description="optimizer steps (default: train.epochs "
                       "over the topic's own examples, else train.max_steps)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted config keys for "
                                      "this topic only, e.g. {train.lr: 1e-4, kl.lambda: 1.0}")
    gate: GateConfig | None = Field(None, description="this topic's gate (default: curriculum.gate)")

    @field_validator("data", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if v is None:
            return []
        return [v] if isinstance(v, (str, Path)) else v

    @field_validator("overrides")
    @classmethod
    def _known_keys(cls, v: dict) -> dict:
        for key in v:
            if key not in ALL_KEYS or key.split(".")[0] in ("curriculum", "lora", "model", "backend",
                                                            "output_dir"):
                hint = suggest(key) if key not in ALL_KEYS else None
                tail = f"; did you mean '{hint}'?" if hint else ""
                raise ValueError(f"'{key}' cannot be overridden per topic{tail} (model, lora, "
                                 "backend and output_dir are shared by every topic)")
        return v


class CurriculumConfig(_Section):
    topics: list[TopicConfig] = Field(..., min_length=1, description="topics in training order; one "
                                      "adapter is carried through all of them")
    replay: float = Field(0.0, ge=0.0, le=1.0, description="examples replayed from earlier topics, "
                          "as a fraction of the current topic's training examples")
    gate: GateConfig = Field(default_factory=GateConfig, description="default gate after each topic")
    eval_split: float = Field(0.1, gt=0.0, lt=1.0, description="held-out fraction of a topic's data "
                              "when neither the topic nor data.eval gives held-out records")

    @field_validator("topics")
    @classmethod
    def _unique_names(cls, v: list) -> list:
        names = [t.name for t in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"topic names must be unique; repeated: {', '.join(dup)}")
        return v


class Config(_Section):
    method: Literal[METHODS] = Field("sft", description="training method")  # type: ignore[valid-type]
    backend: Literal[BACKENDS] = Field("torch", description="torch or mlx")  # type: ignore[valid-type]
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    orpo: ORPOConfig = Field(default_factory=ORPOConfig)
    kto: KTOConfig = Field(default_factory=KTOConfig)
    simpo: SimPOConfig = Field(default_factory=SimPOConfig)
    kl: KLConfig = Field(default_factory=KLConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    curriculum: CurriculumConfig | None = Field(None, description="train topic by topic (see "
                                                "README, Curriculum); null: one run on data.train")
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output_dir: str = Field("runs/run", description="where the run directory is written")
    report_to: list[Literal["tensorboard", "mlflow", "trackio"]] = Field(
        default_factory=list, description="experiment trackers fed during training, all local: "
        "tensorboard (event files in the run's tensorboard/), mlflow (file store in the run's "
        "mlruns/), trackio (its local store); each needs its package (pip install 'mindprint[tracking]')"
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers_shorthand(cls, v: Any) -> Any:
        # `report_to: tensorboard`, MINDPRINT_REPORT_TO=tensorboard,mlflow, or none
        if v is None:
            return []
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip() and s.strip() != "none"]
        return v

    @model_validator(mode="before")
    @classmethod
    def _curriculum_data(cls, v: Any) -> Any:
        # a curriculum whose topics name their own files needs no data.train
        if isinstance(v, dict) and v.get("curriculum"):
            data = v.get("data")
            if data is None:
                v = {**v, "data": {"train": []}}
            elif isinstance(data, dict) and "train" not in data:
                v = {**v, "data": {**data, "train": []}}
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        if self.train.eval_batch_size is None:
            object.__setattr__(self.train, "eval_batch_size", self.train.batch_size)
        if "voice_match" in self.grpo.rewards and not self.grpo.voice_person:
            object.__setattr__(self.grpo, "voice_person", list(self.data.train))
        if self.data.packing is True:   # asked for outright: a method that would ignore it is named
            trained = ({t.method or self.method for t in self.curriculum.topics}
                       if self.curriculum else {self.method})
            unpacked = sorted(trained - set(PACKED_METHODS))
            if unpacked:
                who = (f"method {unpacked[0]} trains" if len(unpacked) == 1 else
                       f"methods {' and '.join(unpacked)} train")
                raise ValueError(f"data.packing: true, but {who} one example per row (packing is "
                                 f"for {' and '.join(PACKED_METHODS)}); set data.packing: auto "
                                 "(the default) or false")
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


# the methods that lay their examples out several to a row under data.packing (methods/sft.py)
PACKED_METHODS = ("sft", "kl_sft")


# Names people bring from TRL / LLaMA-Factory / mlx-lm, mapped to ours, so a suggestion can be made
# even when the spelling is far from ours.
_ALIASES = {
    "learning_rate": "train.lr",
    "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "num_train_steps": "train.max_steps",
    "num_train_epochs": "train.epochs",
    "num_epochs": "train.epochs",
    "logging_steps": "train.log_every",
    "steps_per_report": "train.log_every",
    "eval_steps": "train.eval_every",
    "steps_per_eval": "train.eval_every",
    "save_steps": "train.save_every",
    "save_total_limit": "train.keep_last",
    "bf16": "train.mixed_precision",
    "lora_rank": "lora.r",
    "lora_target": "lora.targets",
    "cutoff_len": "data.max_length",
    "dataset": "data.train",
    "eval_dataset": "data.eval",
    "pref_beta": "dpo.beta",
    "iters": "train.max_steps",
    "lr_scheduler_type": "train.schedule",
    "warmup": "train.warmup_steps",
    "lora_r": "lora.r",
    "rank": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "target_modules": "lora.targets",
    "use_dora": "lora.dora",
    "use_rslora": "lora.rslora",
    "max_seq_length": "data.max_length",
    "train_file": "data.train",
    "eval_file": "data.eval",
    "model_name_or_path": "model.name",
    "output": "output_dir",
    "seed": "train.seed",
    "lambda": "orpo.lam",
    "kl_lambda": "kl.lambda",
    "kl_coef": "kl.lambda",
    "orpo_lambda": "orpo.lam",
    "simpo_gamma": "simpo.gamma",
    "precompute_ref_log_probs": "dpo.reference",
    "num_generations": "grpo.group_size",
    "reward_funcs": "grpo.rewards",
}


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, f in model.model_fields.items():
        full = prefix + (f.alias or name)
        keys.append(full)
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_all_keys(ann, full + "."))
    return keys


ALL_KEYS = _all_keys(Config)


def suggest(key: str) -> str | None:
    """The most likely intended key for an unknown dotted ``key``.

    Candidates are the leaf names in the same section, every leaf name anywhere, and the names
    peers use for our keys (``learning_rate`` → ``train.lr``); the closest leaf spelling wins.
    """
    leaf = key.rsplit(".", 1)[-1]
    if leaf in _ALIASES:
        return _ALIASES[leaf]
    section = key.rsplit(".", 1)[0] + "." if "." in key else ""
    scored: list[tuple[float, int, str]] = []
    for k in ALL_KEYS:
        k_section = k.rsplit(".", 1)[0] + "." if "." in k else ""
        bonus = 1 if k_section == section else 0
        ratio = difflib.SequenceMatcher(None, leaf, k.rsplit(".", 1)[-1]).ratio()
        scored.append((bonus and ratio >= 0.6, ratio, k))   # a close key in the same section wins
    for alias, target in _ALIASES.items():
        scored.append((False, difflib.SequenceMatcher(None, leaf, alias).ratio(), target))
    _, ratio, best = max(scored)
    return best if ratio >= 0.6 else None
