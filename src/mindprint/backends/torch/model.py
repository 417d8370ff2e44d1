"""transformers + PEFT implementation of the backend: load, LoRA, log-probs, generate, save."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import ModelError
from ...models import ModelRef, resolve

ATTN_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "Wqkv",
              "c_attn", "out_proj", "dense")
MLP_NAMES = ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "w1", "w2", "w3",
             "dense_h_to_4h", "dense_4h_to_h", "c_fc")
ADAPTER_META = "mindprint.json"


def quiet_hf() -> None:
    """transformers/PEFT chatter (progress bars, deprecations) is noise in a CLI."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*gradient checkpointing.*")
    logging.getLogger("peft").setLevel(logging.ERROR)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device is 'cuda' but no CUDA device is available")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelError("model.device is 'mps' but MPS is not available")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise ModelError(f"{path}: the tokenizer has no chat template; Mindprint renders every "
                         "record through one")
    return tok


def load_base(ref: ModelRef, *, dtype: str = "auto", device: str = "auto",
              attn_implementation: str = "auto"):
    from transformers import AutoModelForCausalLM

    quiet_hf()
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    kwargs = {"dtype": dt}
    if attn_implementation != "auto":
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.path, **kwargs)
        tok = load_tokenizer(ref.path)
    except OSError as e:
        if ref.kind == "hub":
            raise ModelError(f"model '{ref.spec}' is neither an alias, a local directory nor a "
                             f"model in the local Hugging Face cache ({str(e).splitlines()[0]})") from None
        raise ModelError(f"{ref.spec}: cannot load model: {str(e).splitlines()[0]}") from None
    model.to(dev)
    return model, tok


def linear_module_names(model) -> set[str]:
    names = set()
    for full, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            names.add(full.rsplit(".", 1)[-1])
    return names


def resolve_targets(model, targets) -> list[str] | str:
    available = linear_module_names(model) - {"lm_head"}
    if targets == "all_linear":
        return "all-linear"
    if isinstance(targets, str):
        wanted = ATTN_NAMES if targets == "attn" else ATTN_NAMES + MLP_NAMES
        found = [n for n in wanted if n in available]
        if targets == "attn" and "dense" in found and "o_proj" in found:
            found.remove("dense")
        if not found:
            raise ModelError(f"lora.targets '{targets}': no such modules in this model; "
                             f"its linear layers are {sorted(available)}")
        return found
    missing = [t for t in targets if t not in available]
    if missing:
        raise ModelError(f"lora.targets: {missing} not in this model; its linear layers are "
                         f"{sorted(available)}")
    return list(targets)


def add_lora(model, lora_cfg, seed: int):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)   # LoRA A init is random: tie it to the run's seed
    pcfg = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                      target_modules=resolve_targets(model, lora_cfg.targets),
                      use_dora=lora_cfg.dora, use_rslora=lora_cfg.rslora, bias="none",
                      task_type="CAUSAL_LM")
    return get_peft_model(model, pcfg)


def _decoder_and_head(model):
    """The transformer body and the output projection, when logits are a plain projection."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None, None
    head = base.get_output_embeddings()
    body = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    if body is None or head is None or not isinstance(head, torch.nn.Linear):
        return None, None
    return body, head


def _selected_logps(hidden: torch.Tensor, weight: torch.Tensor, bias, targets: torch.Tensor,
                    chunk: int = 2048) -> torch.Tensor:
    """log softmax(h W^T)[target] per row, a chunk of rows at a time.

    Only the rows that are trained on reach here, and each chunk's logits are recomputed in the
    backward pass (checkpointing), so no full ``[tokens, vocab]`` log-softmax is ever kept.
    """
    def one(h, t):
        logits = F.linear(h, weight, bias).float()
        return logits.gather(-1, t[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    if hidden.shape[0] <= chunk:
        return one(hidden, targets)
    from torch.utils.checkpoint import checkpoint

    parts = [checkpoint(one, hidden[s:s + chunk], targets[s:s + chunk], use_reentrant=False)
             for s in range(0, hidden.shape[0], chunk)]
    return torch.cat(parts)


def token_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                loss_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` log p(token_t | tokens_<t) where ``loss_mask`` is 1, else 0.

    Position 0 has no prediction and is always 0. Logits are computed only at trained positions.
    """
    target_mask = loss_mask[:, 1:].bool()
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    body, head = _decoder_and_head(model)
    if body is None:   # unusual heads (soft-capping, logit scale): the model's own logits
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        lp = torch.log_softmax(logits.float(), dim=-1)
        sel = lp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        out[:, 1:] = torch.where(target_mask, sel, torch.zeros_like(sel))
        return out
    hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    rows = hidden[:, :-1][target_mask]
    tgt = input_ids[:, 1:][target_mask]
    sel = _selected_logps(rows, head.weight, head.bias, tgt)
    inner = torch.zeros(target_mask.shape, dtype=sel.dtype, device=sel.device)
    inner = inner.masked_scatter(target_mask, sel)
    return torch.cat([out[:, :1], inner], dim=1)


def to_batch(seqs: list[list[int]], masks: list[list[int]], pad_id: int, device) -> dict:
    """Right-padded tensors: input_ids, attention_mask, loss_mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    lm = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        att[i, :len(s)] = 1
        lm[i, :len(m)] = torch.tensor(m, dtype=torch.long)
    return {"input_ids": ids.to(device), "attention_mask": att.to(device), "loss_mask": lm.to(device)}


class TorchBackend:
    """The model + tokenizer pair a method works through (see :class:`~..base.Backend`)."""

    name = "torch"

    def __init__(self, model, tokenizer):
        from ...losses import xp as xpmod

        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.xp = xpmod.get("torch")

    def batch(self, seqs: list[list[int]], masks: list[list[int]]) -> dict:
        return to_batch(seqs, masks, self.tokenizer.pad_token_id, self.device)

    def token_logps(self, batch: dict) -> torch.Tensor:
        return token_logps(self.model, batch["input_ids"], batch["attention_mask"],
                           batch["loss_mask"])

    def disabled_adapter(self):
        """The base model, for reference passes: the same weights, adapters switched off."""
        return self.model.disable_adapter()


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def atomic_dir(final: Path):
    """Context manager yielding a temp dir that replaces ``final`` only if the block succeeds."""
    @contextlib.contextmanager
    def cm():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            yield tmp
            old = None
            if final.exists():
                old = final.parent / f".{final.name}.old-{os.getpid()}"
                os.replace(final, old)
            os.replace(tmp, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return cm()


def save_adapter(model, path: Path, meta: dict) -> None:
    """PEFT-format adapter (loads with ``PeftModel.from_pretrained``) + our metadata, atomically."""
    with atomic_dir(Path(path)) as tmp:
        model.save_pretrained(str(tmp))
        (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2))


def read_adapter_meta(path: Path) -> dict:
    p = Path(path)
    if not p.is_dir() or not (p / "adapter_config.json").exists():
        raise ModelError(f"{path}: not an adapter directory (no adapter_config.json)")
    meta_file = p / ADAPTER_META
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if "base_model" not in meta:
        cfg = json.loads((p / "adapter_config.json").read_text())
        meta["base_model"] = cfg.get("base_model_name_or_path")
    return meta


def load_for_inference(model_spec: str | None, adapter: str | None, *, dtype="auto", device="auto"):
    """Base model (+ adapter) ready for generation; the model defaults to the adapter's base."""
    from ...config import DEFAULT_MODEL

    if model_spec is None:
        model_spec = read_adapter_meta(Path(adapter))["base_model"] if adapter else DEFAULT_MODEL
    if not model_spec:
        raise ModelError(f"{adapter}: the adapter does not say which base model it belongs to; "
                         "pass --model")
    ref = resolve(model_spec)
    model, tok = load_base(ref, dtype=dtype, device=device)
    if adapter:
        from peft import PeftModel

        read_adapter_meta(Path(adapter))
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model, tok, ref


@torch.no_grad()
def generate(model, tok, prompts: list[list[dict]], *, max_new_tokens: int = 200,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> list[str]:
    """Batched, KV-cached generation from chat prompts; stops at end-of-turn."""
    from ...data.render import render_text

    torch.manual_seed(seed)
    texts = [render_text(tok, p, add_generation_prompt=True) for p in prompts]
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = old_side
    dev = next(model.parameters()).device
    enc = {k: v.to(dev) for k, v in enc.items()}
    eos = [i for i in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
           if isinstance(i, int) and i >= 0]
    kwargs = dict(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    out = model.generate(**enc, **kwargs)
    new = out[:, enc["input_ids"].shape[1]:]
    return [tok.decode(row, skip_special_tokens=True).strip() for row in new]
