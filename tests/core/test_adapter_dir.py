"""--adapter takes an adapter directory or a run directory (mindprint.outputs.adapter_dir)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mindprint.cli import main
from mindprint.errors import ModelError
from mindprint.outputs import adapter_dir


def _adapter(path: Path, kind: str = "peft") -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (path / ("adapter_model.safetensors" if kind == "peft" else "adapters.safetensors")).write_bytes(b"")
    return path


def test_an_adapter_directory_is_itself(tmp_path):
    peft = _adapter(tmp_path / "peft")
    mlx = _adapter(tmp_path / "mlx", "mlx")
    assert adapter_dir(peft) == peft and adapter_dir(str(mlx)) == mlx


def test_a_run_directory_means_its_adapter(tmp_path):
    run = tmp_path / "runs" / "voice"
    _adapter(run / "adapter")
    _adapter(run / "adapter-mlx", "mlx")                   # an mlx run writes both
    (run / "metrics.jsonl").write_text("{}\n")
    assert adapter_dir(run) == run / "adapter"
    # a curriculum's run directory and one of its topics
    cur = tmp_path / "cur"
    _adapter(cur / "adapter")
    _adapter(cur / "topics" / "01-cycles" / "adapter")
    assert adapter_dir(cur) == cur / "adapter"
    assert adapter_dir(cur / "topics" / "01-cycles") == cur / "topics" / "01-cycles" / "adapter"


def test_a_run_without_its_adapter_yet_names_its_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    for step in (5, 10):
        ck = run / "checkpoints" / f"step-{step:07d}"
        ck.mkdir(parents=True)
        (ck / "state.json").write_text("{}")
        (ck / "trainable.safetensors").write_bytes(b"")
    (run / "config.yaml").write_text("data: {train: x}\n")
    with pytest.raises(ModelError) as e:
        adapter_dir(run)
    msg = str(e.value)
    assert "no adapter/ yet" in msg and "step-0000010" in msg and "not an adapter" in msg
    assert f"mindprint train {run / 'config.yaml'} --resume" in msg
    (run / "checkpoints").rename(tmp_path / "moved")
    with pytest.raises(ModelError, match="no adapter yet and no checkpoint"):
        adapter_dir(run)


@pytest.mark.parametrize("make,needle", [
    (lambda p: None, "no such adapter or run directory"),
    (lambda p: p.write_text("x"), "not a directory"),
    (lambda p: p.mkdir(), "neither an adapter directory"),
])
def test_other_paths_are_refused_with_one_line(tmp_path, make, needle):
    p = tmp_path / "thing"
    make(p)
    with pytest.raises(ModelError, match=needle):
        adapter_dir(p)


def test_every_adapter_option_refuses_a_non_adapter_in_one_line(tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    out = str(tmp_path / "out")
    for argv in (["generate", "--adapter", str(bare), "--prompt", "Hi"],
                 ["eval", "--adapter", str(bare), "--prompts", str(bare)],
                 ["compare", "--adapter", str(bare), "--prompts", str(bare)],
                 ["merge", "--adapter", str(bare), "--out", out],
                 ["export", "gguf", "--adapter", str(bare), "--out", out + ".gguf"],
                 ["adapters", "convert", str(bare), out, "--to", "mlx"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "neither an adapter directory" in err and "Traceback" not in err, argv
    assert not Path(out).exists()


def test_adapters_convert_takes_a_run_directory(tiny_adapter, tmp_path, capsys):
    run = Path(tiny_adapter).parent
    assert main(["adapters", "convert", str(run), str(tmp_path / "mlx"), "--to", "mlx"]) == 0
    assert f"{Path(tiny_adapter)} (peft)" in capsys.readouterr().out
    assert (tmp_path / "mlx" / "adapters.safetensors").exists()
