"""Malformed inputs a new user hands in (found by trying them, issue 19): each is an error naming
its place, never a guess, a silent drop or a traceback."""

from __future__ import annotations

import json

import pytest

from mindprint.data.importers import chatjson, subtitles
from mindprint.data.jsonl import load_jsonl
from mindprint.data.stream import Drops
from mindprint.errors import DataError


def test_srt_with_a_broken_timing_line_is_refused_not_swallowed(tmp_path):
    """The srt library reads '00:00:0X,000' leniently (end 0, the next cues become this cue's
    text); that would give one speaker the next speaker's words."""
    path = tmp_path / "clip.srt"
    path.write_text("1\n00:00:01,000 --> 00:00:0X,000\nINES: Bom dia a todos.\n\n"
                    "2\n00:00:03,500 --> 00:00:05,000\nRUI: Bom dia, Inês.\n")
    with pytest.raises(DataError, match=rf"^{path}:1: malformed cue 1: its timing line"):
        subtitles.parse_srt(str(path), Drops())
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\nINES: Bom dia a todos.\n\n"
                    "2\nnot a timing line\nRUI: Bom dia, Inês.\n")
    with pytest.raises(DataError, match="malformed cue 1"):
        subtitles.parse_srt(str(path), Drops())


@pytest.mark.parametrize("text", [42, {"type": "bold", "text": "hi"}, ["ok ", {"text": 7}]])
def test_telegram_text_of_the_wrong_type_names_the_message(tmp_path, text):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"name": "Ana", "type": "personal_chat", "messages": [
        {"id": 1, "type": "message", "date": "2024-05-01T09:00:00", "from": "Bo",
         "text": "Vens jantar?"},
        {"id": 2, "type": "message", "date": "2024-05-01T09:02:00", "from": "Ana",
         "text": text}]}))
    with pytest.raises(DataError, match=rf"^{path}: message 2: text: expected a string or a list"):
        chatjson.parse_telegram(str(path), Drops())


def test_mlx_folder_without_train_says_so(tmp_path):
    (tmp_path / "valid.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(DataError, match="an mlx-lm data folder needs a train.jsonl "
                                        r"\(found valid.jsonl\)"):
        load_jsonl(tmp_path)
