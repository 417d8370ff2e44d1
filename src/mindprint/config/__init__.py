"""Typed, validated run configuration.

One YAML file drives every backend and method. Loading order (later wins):

    defaults  <  YAML file  <  MINDPRINT_<SECTION>__<KEY> environment variables  <  --set key=value

Unknown keys are rejected with a did-you-mean suggestion; values are range-checked. Every error is a
:class:`~mindprint.errors.ConfigError` whose message names the key.

* :mod:`.sections`         model, data, train, lora, eval; the base section type
* :mod:`.method_sections`  dpo, orpo, kto, simpo, kl, grpo
* :mod:`.schema`           :class:`Config`, the curriculum sections, :data:`ALL_KEYS`, did-you-mean
* :mod:`.loading`          YAML, environment, ``--set``, validation messages, dump, key reference

Every name is importable from ``mindprint.config`` itself, as before the split.
"""

from __future__ import annotations

from ..config_paths import ConfigPathWarning, absolute_paths, resolve_file_paths  # noqa: F401
from .loading import (PROCESS_ENV, _format_error, _parse_scalar, describe, dump_yaml,  # noqa: F401
                      env_overrides, from_dict, load, parse_overrides, read_yaml, set_key)
from .method_sections import (DPOConfig, GRPOConfig, KLConfig, KTOConfig, ORPOConfig,  # noqa: F401
                              ReferenceMode, SimPOConfig)
from .schema import (_ALIASES, ALL_KEYS, METHODS, RENAMED_GATE_KEYS, Config,  # noqa: F401
                     CurriculumConfig, GateConfig, TopicConfig, _all_keys, suggest)
from .sections import (BACKENDS, DEFAULT_BANNED_PHRASES, DEFAULT_MODEL, TABLE_KEYS,  # noqa: F401
                       DataConfig, EarlyStoppingConfig, EvalConfig, LoraConfig, LoraTargets,
                       ModelConfig, RenamedWarning, TrainConfig, _default_banned, _renamed,
                       _Section)
