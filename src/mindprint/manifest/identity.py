"""What a run was trained on, by content: SHA-256 of files (cached by path, size and mtime), of
the tokenized dataset (every token id and loss-mask bit) and of the base model's files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from ..models import cache_dir
from ..outputs import write_atomic

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".npz")
# files that change what the model computes besides its weights
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "tokenizer.model")


# -- files -------------------------------------------------------------------------------------
def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_cache_path() -> Path:
    return cache_dir() / "file-hashes.json"


def cached_sha256(path: str | Path) -> str:
    """sha256 of a (large) file, remembered by (absolute path, size, mtime_ns)."""
    p = Path(path).resolve()
    st = p.stat()
    key, stamp = str(p), [st.st_size, st.st_mtime_ns]
    cache_file = _hash_cache_path()
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(key)
    if isinstance(hit, list) and len(hit) == 3 and hit[:2] == stamp:
        return hit[2]
    digest = sha256_file(p)
    cache = {k: v for k, v in cache.items() if Path(k).exists()}   # forget deleted files
    cache[key] = stamp + [digest]
    try:
        write_atomic(cache_file, json.dumps(cache, indent=0))
    except OSError:
        pass   # a read-only cache only costs time
    return digest


_SKIP_FIELDS = {"ref", "source", "where"}   # cached tensors, raw messages, file:line labels


def _canon(obj):
    """A JSON-able view of a prepared example: its token ids, masks and labels."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if f.name in _SKIP_FIELDS:
                continue
            v = _canon(getattr(obj, f.name))
            if v is not _SKIP:
                out[f.name] = v
        return out
    if isinstance(obj, (list, tuple)):
        return [_canon(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _canon(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return _SKIP    # tensors and other caches are not data


_SKIP = object()


def tokenized_sha256(examples) -> str:
    """sha256 over every prepared example (rendered ids + loss masks, or preference groups)."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(_canon(ex), separators=(",", ":"), sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def data_files(cfg) -> list[dict]:
    out = []
    for role in ("train", "eval"):
        for i, path in enumerate(getattr(cfg.data, role)):
            p = Path(path)
            entry = {"role": role, "index": i, "path": str(path), "abs_path": str(p.resolve())}
            if p.is_file():
                entry.update(bytes=p.stat().st_size, sha256=sha256_file(p))
            else:
                entry.update(bytes=None, sha256=None)
            out.append(entry)
    return out


def model_identity(spec: str, kind: str, path: str) -> dict:
    """Spec, kind, directory and hashes of the files that define the model."""
    ident: dict = {"spec": spec, "kind": kind, "path": path, "weights_sha256": None, "files": {}}
    d = Path(path)
    if not d.is_dir():
        ident["note"] = "not a local directory: weights not hashed"
        return ident
    weights = sorted(p for p in d.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    for p in weights:
        ident["files"][p.name] = cached_sha256(p)
    if weights:
        h = hashlib.sha256()
        for p in weights:
            h.update(f"{p.name}:{ident['files'][p.name]}\n".encode())
        ident["weights_sha256"] = h.hexdigest()
    for name in MODEL_FILES:
        if (d / name).is_file():
            ident["files"][name] = sha256_file(d / name)
    source = d / "mindprint-source.json"       # a converted GGUF names where it came from
    if source.is_file():
        try:
            ident["source"] = json.loads(source.read_text(encoding="utf-8"))
        except ValueError:
            pass
    return ident
