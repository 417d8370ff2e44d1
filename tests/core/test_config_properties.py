"""Property tests: any --set override either validates or fails with a ConfigError naming the key."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mindprint import config as C
from mindprint.config_paths import absolute_paths
from mindprint.errors import ConfigError

BASE = {"data": {"train": "t.jsonl"}}
LEAF_KEYS = [k for k, _, _ in C.describe()]

values = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                   st.booleans(), st.none(), st.text(max_size=12),
                   st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(LEAF_KEYS), value=values)
def test_any_override_validates_or_names_the_key(key, value):
    raw = {"data": dict(BASE["data"])}
    C.set_key(raw, key, value, f"--set {key}")
    try:
        cfg = C.from_dict(raw)
    except ConfigError as e:
        assert key.split(".")[0] in str(e)
        return
    # accepted: it survives a dump/load round trip, paths made absolute (a run's config.yaml)
    again = C.from_dict(yaml.safe_load(C.dump_yaml(cfg)))
    assert again == C.from_dict(absolute_paths(cfg.to_dict()))
    assert C.dump_yaml(again) == C.dump_yaml(cfg)


@settings(max_examples=100, deadline=None)
@given(key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=25))
def test_unknown_keys_are_refused_with_a_message(key):
    if key in LEAF_KEYS or any(k.startswith(key + ".") for k in LEAF_KEYS):
        return
    try:
        C.load(None, [f"{key}=1"], use_env=False, base={"data": {"train": "t"}})
    except ConfigError as e:
        assert "unknown key" in str(e) or "expected" in str(e)
    else:
        raise AssertionError(f"{key} was accepted")


@given(st.text(max_size=40))
def test_scalar_parsing_never_raises(text):
    C._parse_scalar(text)


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, "1", -3])
def test_group_size_below_two_is_refused_whatever_its_type(value):
    # found by the property test above: 0.0 slipped past a check that only looked at ints
    with pytest.raises(ConfigError, match="grpo.group_size: must be at least 2"):
        C.from_dict({"data": {"train": "t"}, "grpo": {"group_size": value}})
