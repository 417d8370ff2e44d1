"""The config sections every run has: model, data, train (with early stopping), lora, and the
eval block; the base section type (unknown keys refused) and renamed-name warnings."""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config_paths import ConfigPathWarning

BACKENDS = ("torch", "mlx")
DEFAULT_MODEL = "smollm2-135m-instruct"
# record keys a table column can fill: mindprint.data.formats.VOCABULARY (a test keeps them equal;
# config sits below data, so it cannot import that)
TABLE_KEYS = ("answer", "chosen", "completion", "conversations", "history", "input", "instruction",
              "kto_tag", "label", "messages", "non_preferred_output", "output", "preferred_output",
              "prompt", "rejected", "system", "text", "tools", "topic")


NUMBERS = (int, float, int | None, float | None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, v: Any, info) -> Any:
        """YAML reads ``true``/``yes`` as a bool, which pydantic would take as the number 1
        (``max_steps: true`` trained one step)."""
        if isinstance(v, bool) and cls.model_fields[info.field_name].annotation in NUMBERS:
            raise ValueError("expected a number, got true/false")
        return v


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
    packing: bool | Literal["auto"] = Field(
        "auto", description="sft / kl_sft: several examples per row of up to data.max_length "
        "tokens (each attends to itself only, positions restart; the same examples, loss and "
        "update per step), for micro-batches whose rows then hold fewer positions than padding; "
        "auto = where the backend reproduces unpacked log-probs on this model, true = an error "
        "where it cannot, false = one example per row. Other methods train unpacked (auto); true "
        "names them as an error"
    )
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
