"""The README's config reference and CLI section stay in step with the code."""

from __future__ import annotations

from pathlib import Path

from mindprint import config as C

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_config_key_is_documented():
    missing = [k for k, _, _ in C.describe() if f"| `{k}` |" not in README]
    assert not missing, f"run 'make readme': undocumented keys {missing}"


def test_two_commands_and_cli_are_documented():
    for needle in ("make demo", "make test", "mindprint train", "mindprint data validate",
                   "mindprint generate", "mindprint config show"):
        assert needle in README
