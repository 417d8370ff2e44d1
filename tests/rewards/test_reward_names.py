"""The leaf list of reward names (what config validates against) and the built-in reward
functions must name the same rewards, and config must not need the reward functions."""

import subprocess
import sys

from mindprint import reward_names
from mindprint.rewards import builtin


def test_every_builtin_name_has_a_maker_and_back():
    assert set(builtin.MAKERS) == set(reward_names.BUILTINS)
    assert len(reward_names.BUILTINS) == len(set(reward_names.BUILTINS))


def test_config_validates_rewards_without_importing_the_reward_functions():
    # the package facade (mindprint/__init__.py) imports the docstring-only mindprint.evaluate
    # package so its function of that name wins; nothing below it may load
    code = ("import sys; import mindprint.config as C; "
            "C.GRPOConfig(rewards=['length', 'my_mod:fn']); "
            "print(sorted(m for m in sys.modules if m.startswith(('mindprint.rewards', "
            "'mindprint.measures', 'mindprint.evaluate.', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
