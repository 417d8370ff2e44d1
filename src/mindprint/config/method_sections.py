"""The per-method sections of a config: dpo, orpo, kto, simpo, kl and grpo."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..reward_names import RENAMED as RENAMED_REWARDS
from ..reward_names import check_name as check_reward_name
from .sections import _renamed, _Section


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
