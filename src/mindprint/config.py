"""Typed, validated run configuration.

One YAML file drives every backend and method. Loading order (later wins):

    defaults  <  YAML file  <  MINDPRINT_<SECTION>__<KEY> environment variables  <  --set key=value

Unknown keys are rejected with a did-you-mean suggestion; values are range-checked. Every error is a
:class:`~mindprint.errors.ConfigError` whose message names the key.
"""

from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config_paths import ConfigPathWarning, absolute_paths, resolve_file_paths  # noqa: F401
from .errors import ConfigError
from .registry import NAMES as METHODS     # the one list of methods (mindprint.registry)
from .reward_names import RENAMED as RENAMED_REWARDS
from .reward_names import check_name as check_reward_name

BACKENDS = ("torch", "mlx")
DEFAULT_MODEL = "smollm2-135m-instruct"
# record keys a table column can fill: mindprint.data.formats.VOCABULARY (a test keeps them equal;
# config sits below data, so it cannot import that)
TABLE_KEYS = ("answer", "chosen", "completion", "conversations", "history", "input", "instruction",
              "kto_tag", "label", "messages", "non_preferred_output", "output", "preferred_output",
              "prompt", "rejected", "system", "text", "tools", "topic")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RenamedWarning(ConfigPathWarning):
    """A config uses a name that was renamed; it still works (shown like the path warnings)."""


def _renamed(name: str, table: dict[str, str], what: str) -> str:
    """``table[name]`` with a warning when ``name`` is an old name, else ``name``."""
    if name in table:
        warnings.warn(f"{what} '{name}' is now called '{table[name]}' (the old name still works)",
                      RenamedWarning, stacklevel=2)
        return table[name]
    return name


class ModelConfig(_Section):
    name: str = Field(DEFAULT_MODEL, description="alias, local HF directory, .gguf file, or hub id")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = float32 on CPU, bfloat16 on CUDA"
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="where to train")
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", description="attention kernel passed to transformers (auto = sdpa when available)"
    )
    quantize: Literal[4, 8] | None = Field(
        None, description="load the frozen base quantised to 4 or 8 bits (torch: bitsandbytes on "
        "CUDA, 4 = QLoRA with NF4 and double quantisation; mlx: MLX affine quantisation of the "
        "linear layers, group size 64); null: unquantised"
    )


class DataConfig(_Section):
    train: list[str] = Field(..., description="training JSONL file(s)")
    eval: list[str] = Field(default_factory=list, description="held-out JSONL file(s)")
    format: Literal[
        "auto", "chat", "alpaca", "completion", "text", "sharegpt", "preference",
        "sharegpt_preference", "alpaca_preference", "openai_preference", "kto", "chat_kto",
        "sharegpt_kto", "prompt",
    ] = Field(
        "auto", description="declared format (see README: Data formats), or auto-detect per file"
    )
    system_prompt: str | None = Field(None, description="system message for alpaca/prompt records")
    max_length: int = Field(1024, ge=16, le=131072, description="tokens per rendered example")
    max_error_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="fraction of bad lines tolerated (0: any bad line fails)"
    )
    eval_split: float = Field(
        0.0, ge=0.0, lt=1.0, description="fraction of train held out for eval when data.eval is empty"
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="tables (CSV/TSV, Parquet, datasets): record key → "
        "column name, e.g. {prompt: question, completion: reply} (as --columns); unmapped keys "
        "are found by column name"
    )

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if v is None:
            return []
        return [v] if isinstance(v, (str, Path)) else v

    @field_validator("columns")
    @classmethod
    def _record_keys(cls, v: dict) -> dict:
        for key in v:
            if key not in TABLE_KEYS:
                hint = difflib.get_close_matches(key, TABLE_KEYS, n=1, cutoff=0.6)
                tail = f"; did you mean '{hint[0]}'?" if hint else ""
                raise ValueError(f"'{key}' is not a record key{tail} (keys: {', '.join(TABLE_KEYS)})")
        return v


class EarlyStoppingConfig(_Section):
    patience: int | None = Field(None, ge=1, description="evals without improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0, description="improvement smaller than this does not count")
    min_steps: int = Field(0, ge=0, description="never stop before this step")


class TrainConfig(_Section):
    max_steps: int = Field(200, ge=1, description="optimizer steps; when set, it wins over "
                           "train.epochs (as in the HF Trainer)")
    epochs: float | None = Field(None, gt=0.0, description="passes over the training data, turned "
                                 "into steps once the data is loaded (ceil(epochs × examples ÷ "
                                 "(batch_size·grad_accum·processes))); null: train.max_steps")
    batch_size: int = Field(4, ge=1, description="examples per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(2e-4, gt=0.0, le=1.0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    adam_eps: float = Field(1e-8, gt=0.0, description="AdamW epsilon")
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps (overrides warmup_ratio)")
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="warmup as a fraction of max_steps")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warmup")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of lr")
    max_grad_norm: float | None = Field(1.0, gt=0.0, description="gradient clipping (null: off)")
    seed: int = Field(0, ge=0, description="seeds data order, LoRA init and dropout")
    log_every: int = Field(1, ge=1, description="steps between metric lines")
    eval_every: int = Field(50, ge=0, description="steps between evals (0: only at the end)")
    eval_at_start: bool = Field(True, description="evaluate once before the first step")
    eval_batch_size: int | None = Field(None, ge=1, description="default: batch_size")
    save_every: int = Field(50, ge=0, description="steps between checkpoints (0: only at the end)")
    keep_last: int = Field(2, ge=1, description="checkpoints kept, plus the best by eval loss")
    max_minutes: float | None = Field(None, gt=0.0, description="time cap: save and stop cleanly")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory")
    mixed_precision: Literal["no", "bf16"] = Field(
        "no", description="torch: bf16 = the training passes' matrix products in bfloat16 under "
        "autocast over float32 weights (TRL/HF `bf16: true`): ~2x the arithmetic on CUDA or a CPU "
        "with AVX512-BF16/AMX, with bf16 rounding in the activations; the LoRA weights, optimizer, "
        "loss and log-softmax stay float32, and so do cached reference log-probs (a live "
        "reference pass runs with the policy's). no: the model's dtype throughout. Nothing to do "
        "for a bfloat16 model; mlx trains in the model's dtype")
    num_threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    fsdp: bool = Field(False, description="under torchrun: shard the base and LoRA weights across "
                       "processes with FSDP2 (for bases that do not fit one device); false: DDP")
    liger: bool | Literal["auto"] = Field(
        "auto", description="Liger Triton kernels (RMSNorm, RoPE, SwiGLU); auto = when liger-kernel "
        "is installed and the device is CUDA")


LoraTargets = Literal["attn", "attn_mlp", "all_linear"]


class LoraConfig(_Section):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank")
    alpha: float = Field(32.0, gt=0.0, description="LoRA alpha (scale alpha/r, or alpha/sqrt(r) with rslora)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the LoRA input")
    targets: LoraTargets | list[str] = Field(
        "attn_mlp", description="attn | attn_mlp | all_linear | explicit list of module names"
    )
    dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    rslora: bool = Field(False, description="rank-stabilised scaling alpha/sqrt(r)")

    @field_validator("targets")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("must name at least one module")
        return v


ReferenceMode = Literal["cached", "live"]


class DPOConfig(_Section):
    beta: float = Field(0.1, gt=0.0, description="dpo/ipo: strength of the pull towards the reference "
                        "(DPO: scale of the log-ratio margin; IPO: target margin 1/(2·beta) per token)")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="dpo: assumed fraction of flipped "
                                   "labels (conservative DPO); 0 = plain sigmoid DPO")
    reference: ReferenceMode = Field("cached", description="dpo/ipo: reference log-probs computed once "
                                     "with the adapter off and cached on disk, or live at every step")


class ORPOConfig(_Section):
    lam: float = Field(0.1, gt=0.0, description="orpo: weight λ of the odds-ratio term against the chosen "
                       "NLL (TRL's ORPOConfig.beta)")
    nll: Literal["answer", "prompt_and_answer"] = Field(
        "answer", description="orpo: tokens of the chosen NLL term. answer = the chosen answer's "
        "tokens only (default: training on the user's prompts would teach the voice to write "
        "questions); prompt_and_answer = every token of prompt + chosen, TRL 1.16's ORPOTrainer "
        "(for parity; costs one more forward pass over the chosen rows)")


class KTOConfig(_Section):
    beta: float = Field(0.1, gt=0.0, description="kto: scale of the implicit reward")
    desirable_weight: float = Field(1.0, gt=0.0, description="kto: loss weight of desirable (label true) "
                                    "completions")
    undesirable_weight: float = Field(1.0, gt=0.0, description="kto: loss weight of undesirable (label "
                                      "false) completions")
    reference: ReferenceMode = Field("cached", description="kto: reference log-probs cached on disk, or "
                                     "live at every step")


class SimPOConfig(_Section):
    beta: float = Field(2.0, gt=0.0, description="simpo: scale of the length-normalised reward")
    gamma: float = Field(0.5, ge=0.0, description="simpo: target reward margin γ (TRL's simpo_gamma)")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="simpo: assumed fraction of flipped "
                                   "labels")


class KLConfig(_Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    lambda_: float = Field(0.5, ge=0.0, alias="lambda", description="kl_sft: weight λ of "
                           "KL(base ‖ tuned) on assistant tokens against the CE loss (0 = plain SFT)")
    tau: float = Field(1.0, gt=0.0, description="kl_sft: softmax temperature τ of both distributions; "
                       "the KL term is scaled by τ² so its gradient size does not depend on τ")


class GRPOConfig(_Section):
    group_size: int = Field(8, le=64, description="grpo: completions sampled per prompt (2–64); "
                            "advantages compare a completion with the others of its prompt")
    temperature: float = Field(1.0, gt=0.0, description="grpo: sampling temperature (the policy's "
                               "log-probs are taken at the same temperature)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="grpo: nucleus sampling")
    max_completion_length: int = Field(128, ge=1, description="grpo: tokens sampled per completion "
                                       "at most (sampling stops at end-of-turn)")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
        "dapo", description="grpo: how token losses are averaged — grpo (per sequence, then over "
        "sequences), bnpo (over the micro-batch's tokens), dr_grpo (÷ sequences·"
        "max_completion_length), dapo (over all tokens of the step)")
    importance_sampling_level: Literal["token", "sequence"] = Field(
        "token", description="grpo: importance ratio per token, or one per sequence (GSPO)")
    epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="grpo: clip range below 1 (and above "
                           "1 unless epsilon_high is set)")
    epsilon_high: float | None = Field(None, gt=0.0, description="grpo: clip range above 1 (DAPO "
                                       "clip-higher, e.g. 0.28); null: epsilon")
    beta: float = Field(0.0, ge=0.0, description="grpo: weight of the k3 KL estimate to the "
                        "adapter-disabled reference (0: no reference pass)")
    num_iterations: int = Field(1, ge=1, description="grpo: optimizer steps on each generated "
                                "batch (old-policy log-probs are kept for the ratio)")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="grpo: divide centred rewards by the group's std, the batch's std, or "
        "nothing")
    rewards: list[str] = Field(default_factory=lambda: ["content_similarity"], min_length=1,
                               description="grpo: reward functions — content_similarity (was "
                               "voice_fidelity), voice_match, answer_similarity, length, format, "
                               "banned_phrases, or \"package.module:function\"")
    reward_weights: list[float] | None = Field(None, description="grpo: one weight per reward "
                                               "(null: all 1)")
    length_range: tuple[int, int] = Field((20, 80), description="grpo: the `length` reward's "
                                          "target range in words (1 inside, falling off outside)")
    format_pattern: str | None = Field(None, description="grpo: the `format` reward's regular "
                                       "expression (1 when re.search finds it, else 0)")
    voice_person: list[str] = Field(default_factory=list, description="grpo: the voice_match "
                                    "reward's files of the person's answers (its verifier is "
                                    "fitted on them); empty: data.train")
    similarity: Literal["f1", "rouge_l"] = Field("f1", description="grpo: the answer_similarity "
                                                 "reward's measure against `answer` (token F1 or "
                                                 "ROUGE-L F)")
    sample_every: int = Field(10, ge=0, description="grpo: steps between writes of sampled "
                              "completions to samples.jsonl (0: never)")
    sampler_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="grpo: weights the rollout sampler reads — bfloat16 halves the memory "
        "traffic of each decoded token (a rounded copy of the policy samples, with no importance "
        "correction for the difference); the log-probs of the loss are still computed in the "
        "training dtype, so the loss is exact for the sampled tokens. auto: bfloat16 when the "
        "model trains in float32 on hardware with native bf16 matmuls (CUDA, or a CPU with "
        "AVX512-BF16/AMX), else the training dtype")

    @field_validator("group_size")
    @classmethod
    def _group_of_two(cls, v: int) -> int:
        # after coercion, so 1.0 / "1" / 0 are refused as surely as 1
        if v < 2:
            raise ValueError("must be at least 2: with one completion per prompt there is no "
                             "group to compare it with, so every advantage is 0")
        return v

    @field_validator("length_range")
    @classmethod
    def _range(cls, v: tuple) -> tuple:
        if not 0 <= v[0] <= v[1]:
            raise ValueError("must be [min, max] words with 0 <= min <= max")
        return v

    @field_validator("format_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        import re

        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a regular expression: {e}") from None
        return v

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, v: list) -> list:
        v = [_renamed(n, RENAMED_REWARDS, "grpo.rewards: reward") for n in v]
        for name in v:
            check_reward_name(name)
        return v

    @model_validator(mode="after")
    def _weights(self) -> "GRPOConfig":
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ValueError(f"reward_weights has {len(self.reward_weights)} weight(s) for "
                             f"{len(self.rewards)} reward(s)")
        if "format" in self.rewards and not self.format_pattern:
            raise ValueError("the format reward needs grpo.format_pattern")
        return self


# eval.banned_phrases' default, also the banned_phrases reward's when it is given none
DEFAULT_BANNED_PHRASES = (
    "as an ai", "language model", "i'm sorry", "i cannot", "i can't assist",
    "it's important to note", "it is important to note", "in conclusion", "i hope this helps",
    "delve",
)


def _default_banned() -> list[str]:
    return list(DEFAULT_BANNED_PHRASES)


class EvalConfig(_Section):
    every: int = Field(0, ge=0, description="during training: steps between voice-fidelity evals "
                       "written to metrics.jsonl (0: off)")
    prompts: list[str] = Field(default_factory=list, description="held-out prompts with reference "
                               "answers (prompt+answer, chat, preference JSONL or .txt) for voice "
                               "fidelity and style; default: data.eval")
    chat: list[str] = Field(default_factory=list, description="held-out chat JSONL for perplexity; "
                            "default: data.eval when it is chat data")
    preference: list[str] = Field(default_factory=list, description="held-out preference pairs for "
                                  "preference accuracy; default: data.eval when it is preference data")
    max_prompts: int = Field(16, ge=1, description="prompts answered for voice fidelity and style "
                             "(the first N)")
    max_records: int | None = Field(None, ge=1, description="chat records and pairs scored for "
                                    "perplexity and preference accuracy (the first N; null: all)")
    max_new_tokens: int = Field(128, ge=1, description="tokens generated per answer")
    temperature: float = Field(0.0, ge=0.0, description="0: greedy decoding (deterministic); > 0 "
                               "samples, seeded by eval.seed")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling when temperature > 0")
    seed: int = Field(0, ge=0, description="seed for sampled decoding")
    batch_size: int = Field(8, ge=1, description="prompts per generation batch and records per "
                            "scoring batch")
    banned_phrases: list[str] = Field(default_factory=_default_banned, description="phrases counted "
                                      "as style violations (case-insensitive)")
    compare_base: bool = Field(True, description="also evaluate the base model (adapter disabled) "
                               "side by side")
    kept: int = Field(20, ge=0, le=100, description="general ability kept: the first N bundled "
                      "everyday prompts (recipes, directions, sums, e-mails...); the tuned model's "
                      "log-prob of the base model's cached answers and its own answers' content "
                      "similarity to them (0: off)")
    kept_max_new_tokens: int = Field(48, ge=1, description="tokens per answer to the everyday "
                                     "prompts, at most eval.max_new_tokens (the base model's "
                                     "answers are cached per base model and this length)")
    output_dir: str | None = Field(None, description="where report.json and report.html go "
                                   "(default: <output_dir>/eval)")

    @field_validator("prompts", "chat", "preference", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if v is None:
            return []
        return [v] if isinstance(v, (str, Path)) else v


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
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


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


def _format_error(err: dict, source: str) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or True)
    kind = err["type"]
    where = f"{source}: " if source else ""
    if kind == "extra_forbidden":
        hint = suggest(loc)
        tail = f"; did you mean '{hint}'?" if hint else ""
        return f"{where}unknown key '{loc}'{tail}"
    if kind == "missing":
        return f"{where}missing required key '{loc}'"
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{where}{loc}: {msg}{shown}"


def from_dict(raw: dict, source: str = "") -> Config:
    """Validate a raw mapping; raise :class:`ConfigError` naming every wrong key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source or 'config'}: expected a mapping of keys, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        lines = [_format_error(err, source) for err in e.errors()]
        raise ConfigError("\n".join(lines)) from None


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def set_key(raw: dict, dotted: str, value: Any, source: str) -> None:
    """Set ``a.b.c = value`` in a nested dict, refusing keys the schema does not know."""
    if dotted not in ALL_KEYS:
        hint = suggest(dotted)
        tail = f"; did you mean '{hint}'?" if hint else ""
        raise ConfigError(f"{source}: unknown key '{dotted}'{tail}")
    parts = dotted.split(".")
    node = raw
    for p in parts[:-1]:
        child = node.get(p)
        if p == "model" and isinstance(child, str):
            child = {"name": child}
        if not isinstance(child, dict):
            child = {}
        node[p] = child
        node = child
    node[parts[-1]] = value


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    out = []
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set train.lr=1e-4")
        key, _, value = pair.partition("=")
        out.append((key.strip(), _parse_scalar(value.strip())))
    return out


# MINDPRINT_* variables that set up the process, not a config key (every other MINDPRINT_* is one):
# the model cache, the web UI's home, torchrun's rendezvous timeout, MLX's BLAS, CPU malloc tuning
PROCESS_ENV = frozenset({"MINDPRINT_CACHE", "MINDPRINT_HOME", "MINDPRINT_DIST_TIMEOUT_MIN",
                         "MINDPRINT_MLX_BLAS", "MINDPRINT_MALLOC_TUNING"})


def env_overrides(environ: dict | None = None) -> list[tuple[str, Any]]:
    """``MINDPRINT_TRAIN__LR=1e-4`` → ``("train.lr", 1e-4)``; top-level keys use one part.
    The variables in :data:`PROCESS_ENV` are not config keys and are skipped."""
    environ = os.environ if environ is None else environ
    out = []
    for name, value in sorted(environ.items()):
        if not name.startswith("MINDPRINT_") or name in PROCESS_ENV:
            continue
        key = name[len("MINDPRINT_"):].lower().replace("__", ".")
        out.append((key, _parse_scalar(value)))
    return out


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such config file")
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, expected a YAML file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}{line}: invalid YAML: {problem}") from None
    if raw is None:
        raise ConfigError(f"{p}: config file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of keys at the top level")
    return raw


def load(path: str | Path | None, overrides: list[str] | None = None, *, use_env: bool = True,
         base: dict | None = None, flags: list[tuple[str, Any]] | None = None) -> Config:
    """Load YAML, apply environment variables, CLI ``flags`` (``(key, value)`` pairs such as
    ``mindprint train --data``'s), then ``--set`` overrides, and validate.

    Relative input paths in the YAML file (data, eval and curriculum files, a local model) are
    resolved against the file's directory; ``output_dir``, ``--set``, flag and environment values
    stay relative to the current directory (see :mod:`mindprint.config_paths`).
    """
    raw = dict(base or {})
    source = str(path) if path else "config"
    if path is not None:
        raw.update(resolve_file_paths(read_yaml(path), path))
    if use_env:
        for key, value in env_overrides():
            set_key(raw, key, value, f"environment MINDPRINT_{key.upper().replace('.', '__')}")
    for key, value in flags or []:
        set_key(raw, key, value, f"--{key.rsplit('.', 1)[-1]}")
    for key, value in parse_overrides(overrides or []):
        set_key(raw, key, value, f"--set {key}")
    return from_dict(raw, source)


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML, every path absolute, so it loads back the same from any
    directory (a run's ``config.yaml``)."""
    return yaml.safe_dump(absolute_paths(cfg.to_dict()), sort_keys=False, allow_unicode=True)


def describe() -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every key — the README's config reference is generated from it."""
    rows = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, prefix + name + ".")
                continue
            name = f.alias or name
            if f.is_required():
                default = "(required)"
            elif f.default_factory is not None:
                default = repr(f.default_factory())
            else:
                default = repr(f.default)
            rows.append((prefix + name, default, f.description or ""))

    walk(Config, "")
    return rows
