"""The README's config reference, CLI section and examples stay in step with the code."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from mindprint import config as C
from mindprint.config_paths import resolve_file_paths

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_config_key_is_documented():
    missing = [k for k, _, _ in C.describe() if f"| `{k}` |" not in README]
    assert not missing, f"run 'make readme': undocumented keys {missing}"


def test_two_commands_and_cli_are_documented():
    for needle in ("make demo", "make test", "mindprint train", "mindprint data validate",
                   "mindprint generate", "mindprint config show"):
        assert needle in README


# -- the README's examples run as printed ------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(lang: str | None = None) -> list[str]:
    return [body for kind, body in FENCE.findall(README) if lang is None or kind == lang]


def _commands() -> list[str]:
    """Every `mindprint …` command line of the README's shell blocks, continuations joined."""
    out = []
    for body in _blocks():
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip().removeprefix(".venv/bin/")
            if line.startswith("mindprint "):
                out.append(line)
    return out


def test_quoted_command_output_is_what_the_command_prints():
    """A ```text block that starts with `$ mindprint …` quotes that command's whole output: run it
    from the repository root (offline, no model) and compare line for line."""
    quoted = [b for b in _blocks("text") if b.startswith("$ mindprint ")]
    assert any("data validate examples/data/bad.jsonl" in b for b in quoted)
    for block in quoted:
        command, *expected = block.rstrip("\n").splitlines()
        argv = shlex.split(command.removeprefix("$ mindprint "))
        r = subprocess.run([sys.executable, "-m", "mindprint.cli", *argv], cwd=REPO,
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
        printed = (r.stdout + r.stderr).rstrip("\n").splitlines()
        assert printed == expected, f"README quotes for `{command}`:\n" + "\n".join(expected) + \
            "\nbut it prints:\n" + "\n".join(printed)


def test_every_printed_command_parses():
    """Commands printed without placeholders ([optional], A|B, …) have only real subcommands and
    flags (argparse exits on an unknown one)."""
    from mindprint.cli import build_parser

    runnable = [c for c in _commands() if not re.search(r"[\[|…<]", c)]
    assert len(runnable) >= 8, runnable
    for command in runnable:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit as e:
            raise AssertionError(f"README command does not parse: {command}") from e


def test_the_config_example_is_the_quickstart_config():
    block = next(b for b in _blocks("yaml") if b.startswith("# examples/quickstart.yaml"))
    shown = yaml.safe_load(block)
    real = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text(encoding="utf-8"))

    def subset(part, whole, where=""):
        for key, value in part.items():
            assert key in whole, f"README config shows {where}{key}, quickstart.yaml has no such key"
            if isinstance(value, dict):
                subset(value, whole[key], f"{where}{key}.")
            else:
                assert whole[key] == value, f"{where}{key}: README {value!r}, quickstart {whole[key]!r}"

    subset(shown, real)
    # and it loads as printed, from the examples folder, with its data files there
    cfg = C.from_dict(resolve_file_paths(shown, REPO / "examples" / "quickstart.yaml"))
    assert all(Path(f).is_file() for f in cfg.data.train + cfg.data.eval)


def test_the_curriculum_example_loads_beside_the_examples():
    block = next(b for b in _blocks("yaml") if b.startswith("curriculum:"))
    raw = {"data": {"train": "data/persona_train.jsonl"}, **yaml.safe_load(block)}
    cfg = C.from_dict(resolve_file_paths(raw, REPO / "examples" / "curriculum.yaml"))
    files = [f for t in cfg.curriculum.topics for f in t.data + t.eval]
    assert files and all(Path(f).is_file() for f in files), files
