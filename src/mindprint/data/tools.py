"""``mindprint data stats | mix | split``: look at, combine and divide JSONL data files.

Each tool streams (see :mod:`mindprint.data.stream`): per line it keeps at most a byte offset,
a length, a topic index or a 16-byte hash, and reads the raw line back when writing, so records
leave byte for byte as they came in (extra keys such as ``topic`` included). Outputs appear
atomically. Lines that are invalid, or dropped as duplicates, are counted per reason on stderr.
Format conversion lives in :mod:`mindprint.data.convert`.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mindprint.data.groups import render_group
from mindprint.data.records import ChatRecord, KTORecord, PreferenceRecord, PromptRecord, TextRecord
from mindprint.data.render import render_messages, render_prompt, render_sft_record
from mindprint.data.stream import Drops, Source, atomic_output, check_output, read_at, record_key
from mindprint.errors import DataError

Log = Callable[[str], None]
DEDUPE = ("exact", "normalized", "none")
PERCENTILES = (50, 90, 95, 99)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _report_drops(drops: Drops, log: Log, *sources: Source) -> None:
    for line in drops.lines() + [r for s in sources for r in s.report()]:
        log(line)


# ----------------------------------------------------------------------------------- stats


@dataclass
class FileStats:
    path: str
    format: str
    records: int
    invalid: int
    topics: dict[str, int]      # records per topic, first-seen order; "" = no topic
    max_length: int
    lengths: dict[str, float]   # mean, p50 … p99, max, total (tokens per record)
    truncated: int              # would be cut to max_length
    dropped: int                # would lose every answer token (or leave no room for one)
    trained_tokens: int = 0     # tokens the loss sees (after masking, weights and max_length)


def _percentile(sorted_values, q: float) -> int:
    """Nearest rank: the smallest value with at least q% of the values at or below it."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _length_and_fate(tokenizer, record, max_length: int) -> tuple[int, bool, bool, int]:
    """(tokens of the longest rendered sequence, truncated?, dropped?, trained tokens) as
    training would see it: chat and text through the SFT renderer, preference/KTO through the
    preference grouping, which keeps the prompt whole and cuts completions; RL prompts train on
    generated tokens, none of the file's."""
    if isinstance(record, ChatRecord | TextRecord):
        r = render_sft_record(tokenizer, record)
        n, trained = len(r.input_ids), sum(r.loss_mask[1:max_length])
        return n, n > max_length, trained == 0, trained
    if isinstance(record, PromptRecord):  # RL prompts: a prompt that fills max_length leaves no room
        n = len(render_prompt(tokenizer, record.prompt))
        return n, False, n >= max_length, 0
    if isinstance(record, PreferenceRecord):
        completions, labels = [record.chosen, record.rejected], [True, False]
    else:
        assert isinstance(record, KTORecord)
        completions, labels = [record.completion], [record.label]
    tools = record.tools
    group, _problem = render_group(tokenizer, record.prompt, completions, labels, max_length,
                                   record.where, tools=tools)
    n = max(len(render_messages(tokenizer, list(record.prompt) + list(c), tools=tools).input_ids)
            for c in completions)
    trained = 0
    for c in completions:  # completion tokens within max_length, the prompt kept whole
        full = render_messages(tokenizer, list(record.prompt) + list(c), train_on="last_assistant",
                               tools=tools)
        trained += sum(full.loss_mask[1:max_length])
    return n, bool(group and group.truncated), group is None, (trained if group else 0)


def file_stats(path, tokenizer, *, fmt: str | None = None, max_length: int = 1024,
               columns: dict[str, str] | None = None, log: Log = _stderr) -> FileStats:
    if max_length < 1:
        raise DataError(f"--max-length must be at least 1, got {max_length}")
    drops = Drops()
    source = Source(path, fmt, drops, columns=columns)
    topics: dict[str, int] = {}
    lengths = array("q")
    truncated = dropped = trained = 0
    for line in source:
        topic = line.record.topic or ""
        topics[topic] = topics.get(topic, 0) + 1
        try:
            n, cut, lost, t = _length_and_fate(tokenizer, line.record, max_length)
        except DataError as err:  # e.g. tool calls the chat template cannot render
            text = str(err)     # the renderer names the record's file:line itself
            drops.add("cannot render", text if text.startswith(line.where) else f"{line.where}: {text}")
            continue
        lengths.append(n)
        truncated += cut
        dropped += lost
        trained += t
    _report_drops(drops, log, source)
    if not lengths:
        raise DataError(f"{path}: no valid records")
    ordered = sorted(lengths)
    summary: dict[str, float] = {"mean": round(sum(ordered) / len(ordered), 1)}
    summary.update({f"p{q}": _percentile(ordered, q) for q in PERCENTILES})
    summary.update({"max": ordered[-1], "total": sum(ordered)})
    return FileStats(str(path), source.format, len(ordered), drops.total, topics, max_length,
                     summary, truncated, dropped, trained)


def format_stats(s: FileStats) -> str:
    topics = ", ".join(f"{name or 'no topic'} {count}" for name, count in s.topics.items())
    pct = ", ".join(f"p{q} {s.lengths[f'p{q}']}" for q in PERCENTILES)
    lines = [f"{s.path}: {s.records} records ({s.format})"
             + (f", {s.invalid} invalid lines skipped" if s.invalid else ""),
             f"  topics: {topics}",
             f"  tokens per record: mean {s.lengths['mean']}, {pct}, max {s.lengths['max']}; "
             f"{s.lengths['total']:,} in all",
             f"  max_length {s.max_length}: {s.truncated} would be truncated, {s.dropped} dropped; "
             f"{s.trained_tokens:,} tokens trained on"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- mix


@dataclass
class MixSource:
    path: str
    weight: float
    valid: int = 0          # after removing invalid lines and duplicates
    capped: int = 0         # after --cap
    taken: int = 0          # after weighting
    offsets: array = field(default_factory=lambda: array("q"), repr=False)
    lengths: array = field(default_factory=lambda: array("q"), repr=False)
    raws: list[bytes] = field(default_factory=list, repr=False)  # records of non-JSONL files


def parse_weighted(spec: str) -> tuple[str, float]:
    """``FILE[:WEIGHT]``; a path that exists as written wins over a weight suffix."""
    path, sep, weight = spec.rpartition(":")
    if not sep or Path(spec).exists():
        return spec, 1.0
    try:
        w = float(weight)
    except ValueError:
        w = math.nan
    if not (math.isfinite(w) and w > 0) or not path:
        raise DataError(f"{spec}: bad weight {weight!r}; write FILE or FILE:WEIGHT with a "
                        "positive number, e.g. a.jsonl:3")
    return path, w


def _weighted(n: int, weight: float, rng: random.Random) -> array:
    """Indices 0..n-1 repeated ``weight`` times: whole copies, plus a random subset for the
    fraction (weight 2.5 on 10 records gives 25 draws, every record at least twice)."""
    whole, frac = divmod(weight, 1.0)
    out = array("q", range(n)) * int(whole)
    out.extend(sorted(rng.sample(range(n), round(frac * n))))
    return out


def mix(specs: list[str], out, *, seed: int = 0, dedupe: str = "exact", cap: int | None = None,
        fmt: str | None = None, force: bool = False, columns: dict[str, str] | None = None,
        log: Log = _stderr) -> list[MixSource]:
    """Weighted mix of files into ``out``; a weight is how many times each record of its file is
    used (``a.jsonl:3 b.jsonl:1``: every record of a three times, of b once), after invalid lines
    and duplicates (the first occurrence, in argument order, stays) are removed and ``cap``
    records at most, chosen at random, are kept per file. The result is shuffled with ``seed``."""
    if dedupe not in DEDUPE:
        raise DataError(f"unknown --dedupe {dedupe!r}; expected one of {', '.join(DEDUPE)}")
    if cap is not None and cap < 1:
        raise DataError(f"--cap must be at least 1, got {cap}")
    if not specs:
        raise DataError("give at least one FILE[:WEIGHT] to mix")
    out = check_output(out, force)
    sources = [MixSource(*parse_weighted(s)) for s in specs]
    drops = Drops()
    streams = [Source(s.path, fmt, drops, columns=columns) for s in sources]
    for st in streams[1:]:
        # one file holds one format: a mixed file would fail to load
        if st.format != streams[0].format:
            raise DataError(f"{st.path}: is '{st.format}' data but {streams[0].path} is "
                            f"'{streams[0].format}' data; convert it first (mindprint data convert)")
    seen: set[bytes] = set()
    for src, stream in zip(sources, streams):
        for line in stream:
            if dedupe != "none":
                key = record_key(line.record, dedupe)
                if key in seen:
                    drops.add(f"duplicate ({dedupe})", line.where)
                    continue
                seen.add(key)
            if line.offset is None:  # no line to seek back to: keep the record's JSON
                src.raws.append(line.raw)
            src.offsets.append(-1 if line.offset is None else line.offset)
            src.lengths.append(line.length)
    del seen
    _report_drops(drops, log, *streams)

    rng = random.Random(seed)
    picks = array("q")  # index * n_sources + source: one int per output line
    for i, src in enumerate(sources):
        src.valid = len(src.offsets)
        keep = range(src.valid)
        if cap is not None and src.valid > cap:
            keep = sorted(rng.sample(range(src.valid), cap))
        src.capped = len(keep)
        chosen = _weighted(src.capped, src.weight, rng)
        src.taken = len(chosen)
        picks.extend(keep[j] * len(sources) + i for j in chosen)
    if not picks:
        raise DataError("nothing to write: no valid records in " + ", ".join(s.path for s in sources))
    rng.shuffle(picks)

    with contextlib.ExitStack() as stack:
        files = [None if s.raws else stack.enter_context(open(s.path, "rb")) for s in sources]
        f = stack.enter_context(atomic_output(out))
        for pick in picks:
            j, i = divmod(pick, len(sources))
            raw = (sources[i].raws[j] if sources[i].raws else
                   read_at(files[i], sources[i].offsets[j], sources[i].lengths[j]))
            f.write(raw + b"\n")
    for src in sources:
        share = src.taken / len(picks)
        capped = f", {src.capped} after --cap" if src.capped != src.valid else ""
        log(f"{src.path}: {src.valid} records{capped}, x{src.weight:g} -> {src.taken} "
            f"({share:.0%} of the mix)")
    log(f"mixed {len(picks)} records ({streams[0].format}, seed {seed}) into {out}")
    return sources


# ----------------------------------------------------------------------------------- split

TRAIN, EVAL = 1, 2  # per-line fate in split's second pass; 0 = dropped


@dataclass
class SplitResult:
    train_out: Path
    eval_out: Path
    train: int
    eval: int
    per_topic: dict[str, tuple[int, int]]   # topic ("" = none) → (eval, total)


def split_outputs(prefix, train_out, eval_out) -> tuple[Path, Path]:
    """``-o data/persona`` → data/persona_train.jsonl and data/persona_eval.jsonl (the naming of
    examples/data), or both of --train-out/--eval-out."""
    if prefix and (train_out or eval_out):
        raise DataError("give -o PREFIX or --train-out/--eval-out, not both")
    if prefix:
        stem = str(prefix).removesuffix(".jsonl")
        return Path(f"{stem}_train.jsonl"), Path(f"{stem}_eval.jsonl")
    if not (train_out and eval_out):
        raise DataError("give -o PREFIX, or both --train-out and --eval-out")
    if Path(train_out).resolve() == Path(eval_out).resolve():
        raise DataError("--train-out and --eval-out are the same file")
    return Path(train_out), Path(eval_out)


def apportion(total: int, sizes: list[int]) -> list[int]:
    """Split ``total`` across strata in proportion to ``sizes`` (largest remainder): quotas are
    rounded down, and the leftover units go to the largest fractions, the first stratum first
    on ties. The counts add up to ``total`` exactly."""
    n = sum(sizes)
    quotas = [total * s / n for s in sizes]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _eval_total(n: int, fraction: float | None, count: int | None) -> int:
    if (fraction is None) == (count is None):
        raise DataError("give one of --eval-fraction or --eval-count")
    if fraction is not None:
        if not 0 < fraction < 1:
            raise DataError(f"--eval-fraction must be between 0 and 1, got {fraction}")
        count = round(fraction * n)
        what = f"--eval-fraction {fraction} of {n} records"
    else:
        what = f"--eval-count {count} of {n} records"
    if not 0 < count < n:
        raise DataError(f"{what} leaves {count} for eval and {n - count} for training; "
                        "both need at least one")
    return count


def split(path, *, eval_fraction: float | None = None, eval_count: int | None = None,
          seed: int = 0, prefix=None, train_out=None, eval_out=None, fmt: str | None = None,
          force: bool = False, columns: dict[str, str] | None = None,
          log: Log = _stderr) -> SplitResult:
    """Stratified train/eval split: each topic (records without one form their own stratum)
    gives its share of the eval set; which records, is drawn with ``seed``. Both outputs keep
    the input's order."""
    train_out, eval_out = split_outputs(prefix, train_out, eval_out)
    check_output(train_out, force)
    check_output(eval_out, force)
    drops = Drops()
    source = Source(path, fmt, drops, columns=columns)
    # pass 1: the fate of every non-blank line (1 byte each) and its stratum's members
    fate = bytearray()
    strata: dict[str, array] = {}
    for line in source:
        ordinal = source.lines_read - 1
        fate.extend(bytes(ordinal + 1 - len(fate)))  # lines skipped as invalid stay 0
        fate[ordinal] = TRAIN
        strata.setdefault(line.record.topic or "", array("q")).append(ordinal)
    _report_drops(drops, log, source)
    n = sum(len(members) for members in strata.values())
    if not n:
        raise DataError(f"{path}: no valid records")
    total = _eval_total(n, eval_fraction, eval_count)
    rng = random.Random(seed)
    per_topic = {}
    for (topic, members), k in zip(strata.items(), apportion(total, [len(m) for m in strata.values()])):
        for j in rng.sample(range(len(members)), k):
            fate[members[j]] = EVAL
        per_topic[topic] = (k, len(members))
    del strata
    # pass 2: copy the raw lines, in order, to their file
    with atomic_output(train_out) as ft, atomic_output(eval_out) as fe:
        for ordinal, raw in enumerate(item.raw for item in source.items()):
            to = fate[ordinal] if ordinal < len(fate) else 0
            if to:
                (fe if to == EVAL else ft).write(raw + b"\n")
    parts = ", ".join(f"{t or 'no topic'} {k}/{m}" for t, (k, m) in per_topic.items())
    log(f"split {n} records ({source.format}, seed {seed}): train {n - total}, eval {total} "
        f"(eval per topic: {parts})")
    return SplitResult(train_out, eval_out, n - total, total, per_topic)
