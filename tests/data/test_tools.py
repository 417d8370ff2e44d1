"""``mindprint data stats | mix | split`` and their streaming plumbing, on small hand-made files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import chat, write_jsonl

from mindprint.cli import main
from mindprint.data import sources, stream, tools
from mindprint.data.jsonl import iter_lines, load_jsonl
from mindprint.data.records import ChatRecord, Message
from mindprint.data.stream import record_key
from mindprint.data.tools import apportion, mix, split
from mindprint.errors import DataError


def lines(path) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def answers(path) -> list[str]:
    return [json.loads(x)["messages"][-1]["content"] for x in lines(path)]


def chats(prefix: str, n: int, topic: str | None = None) -> list[dict]:
    return [chat(f"{prefix} question {i}?", f"{prefix}{i}", topic) for i in range(n)]


def only_inputs_left(tmp_path, *names):
    """No output and no temporary file beside the inputs."""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


# -------------------------------------------------------------------------------- plumbing


def test_iter_lines_gives_offsets_to_seek_back_to(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n  \n{"b": "\xc3\xa9"}\r\n{"c": 3}')
    got = list(iter_lines(path))
    assert [n for n, _, _ in got] == [1, 4, 5]        # blank lines skipped, numbers kept
    with open(path, "rb") as f:
        for _, offset, raw in got:
            assert stream.read_at(f, offset, len(raw)) == raw
    assert got[0][2] == b'{"a": 1}'                     # BOM not part of the record


def test_record_key_exact_and_normalized():
    a = ChatRecord((Message("user", "Is cash trash?"), Message("assistant", "Zoom  out.\n")), "x")
    b = ChatRecord((Message("user", "is cash  trash?"), Message("assistant", "zoom out.")), None)
    c = ChatRecord((Message("user", "Is cash trash?"), Message("assistant", "Zoom  out.\n")), None)
    assert record_key(a, "exact") == record_key(c, "exact")          # topic is not content
    assert record_key(a, "exact") != record_key(b, "exact")
    assert record_key(a, "normalized") == record_key(b, "normalized")
    assert len(record_key(a, "exact")) == 16


def test_drops_count_every_reason_and_show_the_first_few():
    d = stream.Drops()
    for i in range(7):
        d.add("invalid", f"f:{i}: bad")
    d.add("duplicate (exact)", "f:9")
    assert d.total == 8
    assert d.lines() == ["dropped 8 lines:", "  invalid: 7 (first 5 shown)",
                         *[f"    f:{i}: bad" for i in range(5)],
                         "  duplicate (exact): 1", "    f:9"]


# ----------------------------------------------------------------------------------- stats


def test_stats_counts_lengths_and_forecasts_truncation(tmp_path, tokenizer):
    from mindprint.data.render import render_messages

    long_q = " ".join(["spreads"] * 150)
    long_a = " ".join(["patience"] * 150)
    rows = [chat("Short?", "Zoom out.", "cycles"), chat("Other?", "Yes.", "cycles"),
            chat(long_q, "Zoom out.", "risk"),      # the prompt alone passes max_length: dropped
            chat("Tell me.", long_a),               # only the answer's end is cut: truncated
            "{broken"]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    logged = []
    s = tools.file_stats(path, tokenizer, max_length=100, log=logged.append)

    n = sorted(len(render_messages(tokenizer, ChatRecord_of(r).messages).input_ids) for r in rows[:4])
    assert n[1] < 100 < n[2]                         # the two long ones really are long
    assert (s.format, s.records, s.invalid) == ("chat", 4, 1)
    assert s.topics == {"cycles": 2, "risk": 1, "": 1}
    # nearest rank on 4 values: p50 is the 2nd, p90/p95/p99 the 4th
    assert (s.lengths["p50"], s.lengths["p90"], s.lengths["max"]) == (n[1], n[3], n[3])
    assert s.lengths["total"] == sum(n)
    assert (s.truncated, s.dropped) == (2, 1)
    assert logged[0] == "dropped 1 line:" and logged[2].startswith(f"    {path}:5: invalid JSON")


def ChatRecord_of(row: dict) -> ChatRecord:
    return ChatRecord(tuple(Message(m["role"], m["content"]) for m in row["messages"]))


def test_stats_cli_json_uses_the_bundled_tokenizer(tmp_path, capsys):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Is cash trash?", "topic": "risk"},
                                              {"prompt": "Why?"}])
    assert main(["data", "stats", str(path), "--json", "--max-length", "16"]) == 0
    [s] = json.loads(capsys.readouterr().out)
    assert (s["format"], s["records"], s["topics"]) == ("prompt", 2, {"risk": 1, "": 1})
    assert s["max_length"] == 16 and s["lengths"]["max"] > 0


# ------------------------------------------------------------------------------------- mix


def test_mix_weights_are_uses_per_record(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", chats("a", 10))
    b = write_jsonl(tmp_path / "b.jsonl", chats("b", 10))
    out = tmp_path / "out.jsonl"
    mix([f"{a}:3", f"{b}:0.5"], out, log=lambda s: None)
    got = Counter(answers(out))
    assert sum(v for k, v in got.items() if k.startswith("a")) == 30
    assert all(got[f"a{i}"] == 3 for i in range(10))                 # every a record three times
    bs = [k for k in got if k.startswith("b")]
    assert len(bs) == 5 and all(got[k] == 1 for k in bs)             # a random half of b, once


def test_mix_is_deterministic_with_its_seed(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", chats("a", 20))
    b = write_jsonl(tmp_path / "b.jsonl", chats("b", 20))
    outs = [tmp_path / f"o{i}.jsonl" for i in range(3)]
    for out, seed in zip(outs, (7, 7, 8)):
        mix([f"{a}:1.5", str(b)], out, seed=seed, log=lambda s: None)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert lines(outs[0]) != lines(outs[2])
    assert len(lines(outs[0])) == len(lines(outs[2])) == 50
    assert answers(outs[0]) != sorted(answers(outs[0]), key=lambda s: (s[0], int(s[1:])))  # shuffled


def test_mix_dedupe_modes(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [chat("Is cash trash?", "Zoom out."),
                                           chat("Why?", "Because.")])
    b = write_jsonl(tmp_path / "b.jsonl", [
        # the same record as a:1, keys in another order and with a topic: an exact duplicate
        {"topic": "risk", "messages": [{"content": "Is cash trash?", "role": "user"},
                                       {"content": "Zoom out.", "role": "assistant"}]},
        chat("is cash   TRASH?", "zoom out."),       # a normalized duplicate only
        chat("New?", "New.")])
    counts = {}
    for mode in ("none", "exact", "normalized"):
        logged = []
        out = tmp_path / f"{mode}.jsonl"
        mix([str(a), str(b)], out, dedupe=mode, log=logged.append)
        counts[mode] = len(lines(out))
        if mode == "normalized":
            assert logged[:4] == ["dropped 2 lines:", "  duplicate (normalized): 2",
                                  f"    {b}:1", f"    {b}:2"]
    assert counts == {"none": 5, "exact": 4, "normalized": 3}


def test_mix_cap_and_raw_lines_kept_byte_for_byte(tmp_path):
    raw = ['{"messages":[{"role":"user","content":"q%d"},{"role":"assistant","content":"caf\\u00e9 %d"}],'
           '"id":%d,"topic":"t"}' % (i, i, i) for i in range(10)]
    a = write_jsonl(tmp_path / "a.jsonl", raw)
    b = write_jsonl(tmp_path / "b.jsonl", chats("b", 3))
    out = tmp_path / "out.jsonl"
    mix([f"{a}:2", str(b)], out, cap=4, log=lambda s: None)
    got = lines(out)
    from_a = [x for x in got if x in raw]
    assert len(from_a) == 8 and len(set(from_a)) == 4                # 4 records (cap) twice each
    assert len(got) == 11 and set(got) <= set(raw) | set(lines(b))   # original bytes, extra keys


def test_mix_drops_invalid_lines_with_the_loaders_message(tmp_path):
    bad = {"messages": [{"role": "robot", "content": "x"}]}
    a = write_jsonl(tmp_path / "a.jsonl", [chat("q", "a"), bad, "not json"])
    logged = []
    mix([str(a)], tmp_path / "o.jsonl", log=logged.append)
    with pytest.raises(DataError) as info:
        load_jsonl(a)
    assert logged[:4] == ["dropped 2 lines:", "  invalid: 2",
                          *[f"    {p}" for p in info.value.problems]]
    assert len(lines(tmp_path / "o.jsonl")) == 1


def test_mix_refuses_files_of_different_formats(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [chat("q", "a")])
    b = write_jsonl(tmp_path / "b.jsonl", [{"instruction": "q", "output": "a"}])
    with pytest.raises(DataError, match="is 'alpaca' data but .* is 'chat' data; convert it first"):
        mix([str(a), str(b)], tmp_path / "o.jsonl")


@pytest.mark.parametrize("spec, ok", [("a.jsonl:2", ("a.jsonl", 2.0)), ("a.jsonl", ("a.jsonl", 1.0)),
                                      ("a.jsonl:0.25", ("a.jsonl", 0.25)), ("a.jsonl:x", None),
                                      ("a.jsonl:0", None), ("a.jsonl:-1", None), ("a.jsonl:", None),
                                      ("a.jsonl:nan", None)])
def test_weight_syntax(spec, ok):
    if ok:
        assert tools.parse_weighted(spec) == ok
    else:
        with pytest.raises(DataError, match="bad weight"):
            tools.parse_weighted(spec)


# ----------------------------------------------------------------------------------- split


def test_apportion_largest_remainder():
    assert apportion(8, [20, 10, 10]) == [4, 2, 2]
    assert apportion(5, [20, 10, 10]) == [3, 1, 1]      # quotas 2.5, 1.25, 1.25: the .5 wins
    assert apportion(2, [1, 1, 1]) == [1, 1, 0]          # ties: the first strata first
    assert sum(apportion(7, [13, 5, 9, 1])) == 7


def topic_file(tmp_path):
    rows = chats("a", 20, "cycles") + chats("b", 10, "risk") + chats("c", 10)
    rows = [rows[i] for i in range(0, 40, 2)] + [rows[i] for i in range(1, 40, 2)]  # interleave
    return write_jsonl(tmp_path / "d.jsonl", rows)


def test_split_is_stratified_by_topic(tmp_path):
    path = topic_file(tmp_path)
    r = split(path, eval_fraction=0.2, prefix=tmp_path / "out", log=lambda s: None)
    assert (r.train_out.name, r.eval_out.name) == ("out_train.jsonl", "out_eval.jsonl")
    assert (r.train, r.eval) == (32, 8)
    ev = Counter(json.loads(x).get("topic") for x in lines(r.eval_out))
    assert ev == {"cycles": 4, "risk": 2, None: 2}
    assert r.per_topic == {"cycles": (4, 20), "risk": (2, 10), "": (2, 10)}
    r = split(path, eval_count=5, prefix=tmp_path / "five", log=lambda s: None)
    assert Counter(json.loads(x).get("topic") for x in lines(r.eval_out)) == {"cycles": 3, "risk": 1,
                                                                              None: 1}


def test_split_is_deterministic_disjoint_and_keeps_order(tmp_path):
    path = topic_file(tmp_path)
    outs = []
    for name, seed in (("x", 1), ("y", 1), ("z", 2)):
        r = split(path, eval_fraction=0.25, seed=seed, prefix=tmp_path / name, log=lambda s: None)
        outs.append((lines(r.train_out), lines(r.eval_out)))
    assert outs[0] == outs[1] and outs[0][1] != outs[2][1]
    train, ev = outs[0]
    original = lines(path)
    assert sorted(train + ev) == sorted(original) and not set(train) & set(ev)
    assert train == [x for x in original if x in train]          # input order, raw lines
    assert ev == [x for x in original if x in ev]


def test_split_named_outputs_and_invalid_lines(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", chats("a", 9) + ['{"messages": 3}'])
    logged = []
    r = split(path, eval_count=3, train_out=tmp_path / "t.jsonl", eval_out=tmp_path / "e.jsonl",
              log=logged.append)
    assert (len(lines(r.train_out)), len(lines(r.eval_out))) == (6, 3)
    assert logged[2] == f"    {path}:10: messages: must be a list of messages, got number"


@pytest.mark.parametrize("kwargs, message", [
    ({"eval_fraction": 0.0}, "between 0 and 1"),
    ({"eval_fraction": 1.5}, "between 0 and 1"),
    ({"eval_fraction": 0.01}, "leaves 0 for eval"),
    ({"eval_count": 10}, "leaves 10 for eval and 0 for training"),
    ({}, "give one of --eval-fraction or --eval-count"),
])
def test_split_sizes_that_cannot_work(tmp_path, kwargs, message):
    path = write_jsonl(tmp_path / "d.jsonl", chats("a", 10))
    with pytest.raises(DataError, match=message):
        split(path, prefix=tmp_path / "o", **kwargs)
    only_inputs_left(tmp_path, "d.jsonl")


# ------------------------------------------------------------------------- atomic outputs


class Boom(RuntimeError):
    pass


def _raise_on_call(monkeypatch, module, name, after: int):
    real, calls = getattr(module, name), []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise Boom("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)


def test_a_crash_midway_leaves_no_partial_output(tmp_path, monkeypatch):
    a = write_jsonl(tmp_path / "a.jsonl", chats("a", 10))
    old = tmp_path / "old.jsonl"
    old.write_text("previous content\n")
    _raise_on_call(monkeypatch, tools, "read_at", after=3)  # mix dies after writing 3 lines
    with pytest.raises(Boom):
        mix([str(a)], old, force=True, log=lambda s: None)
    with pytest.raises(Boom):
        mix([str(a)], tmp_path / "new.jsonl", log=lambda s: None)
    assert old.read_text() == "previous content\n"             # untouched, not half replaced
    only_inputs_left(tmp_path, "a.jsonl", "old.jsonl")


def test_a_crash_midway_in_split_leaves_neither_output(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", chats("a", 10))
    real, reads = sources.iter_lines, []

    def dies_at_line_6(p):  # split's copying pass: the first 5 lines are written, then a kill
        reads.append(p)     # the file is read three times: detection, fates, copying
        for i, item in enumerate(real(p)):
            if i == 5 and len(reads) == 3:
                raise Boom("killed")
            yield item

    monkeypatch.setattr(sources, "iter_lines", dies_at_line_6)
    with pytest.raises(Boom):
        split(path, eval_count=2, prefix=tmp_path / "o", log=lambda s: None)
    only_inputs_left(tmp_path, "d.jsonl")


# ------------------------------------------------------------------------------ streaming


def test_tools_never_read_a_whole_file(tmp_path, monkeypatch):
    a = write_jsonl(tmp_path / "a.jsonl", chats("a", 30, "t") + chats("b", 10))
    b = write_jsonl(tmp_path / "b.jsonl", chats("c", 5))

    def whole_file(*args, **kwargs):
        raise AssertionError("a data tool read a whole file into memory")

    for name in ("read_text", "read_bytes"):
        monkeypatch.setattr(Path, name, whole_file)
    mix([f"{a}:2", str(b)], tmp_path / "m.jsonl", cap=20, dedupe="normalized", log=lambda s: None)
    split(a, eval_fraction=0.1, prefix=tmp_path / "s", log=lambda s: None)


def test_memory_stays_flat_on_a_large_file(tmp_path):
    """~12 MB of long records: split and mix keep a few bytes per line, never the texts."""
    import tracemalloc

    path = tmp_path / "big.jsonl"
    filler = "Zoom out. " * 600
    with open(path, "w") as f:
        for i in range(2000):
            f.write(json.dumps(chat(f"q{i}", f"{i} {filler}", f"t{i % 4}")) + "\n")
    size = path.stat().st_size
    assert size > 10_000_000
    tracemalloc.start()
    try:
        split(path, eval_fraction=0.1, prefix=tmp_path / "s", log=lambda s: None)
        mix([f"{path}:1.5"], tmp_path / "m.jsonl", dedupe="normalized", log=lambda s: None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size / 10, f"peak {peak:,} bytes for a {size:,}-byte file"
    assert len(lines(tmp_path / "m.jsonl")) == 3000


# ---------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize("argv, message", [
    (["mix", "{a}:x", "-o", "{out}"], "bad weight 'x'"),
    (["mix", "{missing}", "-o", "{out}"], "missing.jsonl: no such file"),
    (["mix", "{a}", "-o", "{out}", "--dedupe", "fuzzy"], "unknown --dedupe 'fuzzy'"),
    (["mix", "{a}", "-o", "{a}"], "a.jsonl: already exists; pass --force to replace it"),
    (["split", "{a}", "--format", "xml", "-o", "{out}"], "unknown format 'xml'"),
    (["split", "{a}"], "give -o PREFIX, or both --train-out and --eval-out"),
    (["stats", "{missing}"], "missing.jsonl: no such file"),
    (["convert", "{a}", "--to", "yaml", "-o", "{out}"], "unknown target format 'yaml'"),
    (["convert", "{a}", "--to", "chat", "-o", "{out}"], "cannot convert chat data to chat"),
])
def test_cli_user_mistakes_are_one_line_errors(tmp_path, capsys, argv, message):
    a = write_jsonl(tmp_path / "a.jsonl", chats("a", 4))
    names = {"a": a, "out": tmp_path / "o.jsonl", "missing": tmp_path / "missing.jsonl"}
    assert main(["data", *[x.format(**names) for x in argv]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert "Traceback" not in captured.err
    only_inputs_left(tmp_path, "a.jsonl")


def test_cli_prints_output_paths_on_stdout(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", chats("a", 10, "t"))
    assert main(["data", "split", str(a), "-o", str(tmp_path / "p")]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [str(tmp_path / "p_train.jsonl"), str(tmp_path / "p_eval.jsonl")]
    assert "train 9, eval 1" in out.err                       # default eval fraction 0.1
    assert main(["data", "mix", f"{tmp_path / 'p_train.jsonl'}:2", str(tmp_path / "p_eval.jsonl"),
                 "-o", str(tmp_path / "m.jsonl"), "--seed", "3"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [str(tmp_path / "m.jsonl")]
    assert "mixed 19 records" in out.err
