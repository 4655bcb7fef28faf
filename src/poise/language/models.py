"""Chat language models: the tiny world Llama, any local Hugging Face causal LM, LoRA, and store artifacts.

A :class:`ChatLM` is a causal LM plus its tokenizer (with a chat template). Three sources:

* ``tiny_llama(cfg, tokenizer)`` — a few-million-parameter Llama (transformers ``LlamaConfig``) for the
  world's tokenizer, trained from scratch by ``language.base``;
* ``load_hf(path)`` — any local HF causal-LM folder (``config.json`` + safetensors weights + tokenizer);
  never downloads (``local_files_only``); LoRA adapters through peft for big ones (``apply_lora``);
* ``load_lm(ctx, run)`` — a model a poise run saved: full weights as a safetensors artifact whose
  metadata holds the architecture and the tokenizer, or (LoRA) only the adapter plus a pointer to its base.

``export_hf(lm, folder)`` writes a standard HF folder (safetensors, never pickle) that vLLM, mergekit or
``load_hf`` read back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from pydantic import Field  # noqa: E402

from poise.errors import UserError  # noqa: E402
from poise.language.tokenizer import tokenizer_fingerprint, tokenizer_from_meta, tokenizer_to_meta  # noqa: E402
from poise.recipes import Section  # noqa: E402

PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}Assistant: {{ m['content'] }}{{ eos_token }}\n"
    "{% else %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class TinyLMCfg(Section):
    """Shape of the tiny world Llama (defaults: ~1.6M parameters with a 1024-token vocabulary)."""

    vocab_size: int = Field(1024, ge=300, description="BPE vocabulary trained on the world")
    hidden_size: int = Field(160, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    num_kv_heads: int = Field(2, gt=0)
    intermediate_size: int = Field(384, gt=0)
    max_length: int = Field(96, ge=16, description="context length (prompt + response tokens)")


class LoraCfg(Section):
    """LoRA adapters (peft) for big models: only the adapters train and only they are stored."""

    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ChatLM:
    """A causal LM and its chat tokenizer, plus where it came from (stored with its artifacts)."""

    model: Any
    tokenizer: Any
    meta: dict[str, Any] = field(default_factory=dict)
    folder_version: int | None = field(default=None, repr=False)  # param_version() right after load_hf

    def weights_from_folder(self) -> bool:
        """Whether the weights in memory are still those of ``meta["path"]`` (not trained, merged or adapted).

        In-place updates (optimiser steps, LoRA merges, re-tying) bump torch's per-tensor version counters;
        moving or casting the model does not.
        """
        return (
            "path" in self.meta
            and self.folder_version is not None
            and not is_peft(self.model)
            and param_version(self.model) == self.folder_version
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> ChatLM:
        self.model.to(device)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


# --------------------------------------------------------------------------- construction


def tiny_llama(cfg: TinyLMCfg, tokenizer: Any, seed: int = 0) -> ChatLM:
    """A freshly initialised tiny Llama sized for ``tokenizer`` (weights seeded by ``seed``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if cfg.hidden_size % cfg.num_heads or cfg.num_heads % cfg.num_kv_heads:
        raise UserError(
            "hidden_size must divide by num_heads and num_heads by num_kv_heads", field="model.tiny"
        )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_length,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return ChatLM(model, tokenizer, {"source": "tiny", "tiny": cfg.model_dump()})


def param_version(model: Any) -> int:
    """Sum of the parameters' in-place version counters: it changes whenever any weight is updated in place."""
    return sum(p._version for p in model.parameters())


def _torch_dtype(dtype: str) -> Any:
    return {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        dtype
    ]


def check_model_folder(path: Path, *, where: str | Path | None = None, field: str = "model.path") -> Path:
    """A local HF model folder: it exists, holds ``config.json`` and weights; otherwise ``UserError``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(
            f"no such folder {str(path)!r}; expected a local Hugging Face model folder (nothing is "
            "downloaded)",
            where=where,
            field=field,
        )
    if not path.is_dir():
        raise UserError(
            f"{str(path)!r} is a file; expected a Hugging Face model folder", where=where, field=field
        )
    if not (path / "config.json").is_file():
        raise UserError(
            f"no config.json in {str(path)!r}; expected a Hugging Face model folder "
            "(config.json + weights + tokenizer)",
            where=where,
            field=field,
        )
    weights = (
        list(path.glob("*.safetensors"))
        + list(path.glob("*.bin"))
        + list(path.glob("*.safetensors.index.json"))
    )
    if not weights:
        raise UserError(f"no weights (*.safetensors) in {str(path)!r}", where=where, field=field)
    return path


def has_chat_template(folder: Path) -> bool:
    """Whether a tokenizer folder holds a chat template (``tokenizer_config.json``, ``chat_template.jinja`` or
    ``chat_template.json``), without loading it."""
    import json

    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(isinstance(config, dict) and config.get("chat_template"))


def check_tokenizer(
    model: Any, tokenizer: Any, *, where: str | Path | None = None, field: str = "model.tokenizer"
) -> None:
    """``UserError`` when the tokenizer cannot drive the model (too many tokens, ids out of range)."""
    n_embed = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > n_embed:
        raise UserError(
            f"tokenizer has {len(tokenizer)} tokens but the model has {n_embed} embeddings; expected the "
            "tokenizer the model was trained with",
            where=where,
            field=field,
        )
    for name in ("eos_token_id", "pad_token_id"):
        tid = getattr(tokenizer, name, None)
        if tid is not None and tid >= n_embed:
            raise UserError(
                f"tokenizer {name} {tid} is outside the model's {n_embed} embeddings; expected the "
                "tokenizer the model was trained with",
                where=where,
                field=field,
            )
    cfg_eos = getattr(model.config, "eos_token_id", None)
    if isinstance(cfg_eos, int) and tokenizer.eos_token_id is not None and cfg_eos != tokenizer.eos_token_id:
        raise UserError(
            f"tokenizer end-of-sequence id {tokenizer.eos_token_id} differs from the model's {cfg_eos}; "
            "expected the tokenizer the model was trained with",
            where=where,
            field=field,
        )


def _prepare_tokenizer(tok: Any) -> Any:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = PLAIN_CHAT_TEMPLATE
    tok.padding_side = "right"
    return tok


def load_hf(
    path: str | Path,
    tokenizer: str | Path | None = None,
    *,
    dtype: str = "float32",
    where: str | Path | None = None,
    field: str = "model.path",
    require_chat_template: str | None = None,
) -> ChatLM:
    """A local HF causal LM and its tokenizer (from ``tokenizer`` or the model folder); checked to match.

    A folder without a chat template gets a plain ``User:`` / ``Assistant:`` one, unless
    ``require_chat_template`` names what needs the folder's own (a judge whose prompt is that template).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # poise shows its own progress; an error stays one line on stderr
    folder = check_model_folder(Path(path), where=where, field=field)
    tok_dir = Path(tokenizer).expanduser() if tokenizer else folder
    tok_field = "model.tokenizer" if tokenizer else field
    if not tok_dir.is_dir() or not any(
        (tok_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    ):
        raise UserError(
            f"no tokenizer files in {str(tok_dir)!r}; expected tokenizer.json or tokenizer_config.json",
            where=where,
            field=tok_field,
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot load the tokenizer in {str(tok_dir)!r}: {e}", where=where, field=tok_field
        ) from None
    if require_chat_template and not getattr(tok, "chat_template", None):
        raise UserError(
            f"no chat template in {str(tok_dir / 'tokenizer_config.json')!r} (nor chat_template.jinja); expected "
            f"the {require_chat_template} chat template that this judge's prompt is",
            where=where,
            field=tok_field,
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), local_files_only=True, dtype=_torch_dtype(dtype)
        )
    except (OSError, ValueError, KeyError) as e:
        raise UserError(
            f"cannot load a causal LM from {str(folder)!r}: {e}", where=where, field=field
        ) from None
    tok = _prepare_tokenizer(tok)
    check_tokenizer(model, tok, where=where, field=tok_field)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    meta = {
        "source": "hf",
        "path": str(folder.resolve()),
        "tokenizer_path": str(tok_dir.resolve()),
        "dtype": dtype,
    }
    return ChatLM(model, tok, meta, folder_version=param_version(model))


def apply_lora(lm: ChatLM, cfg: LoraCfg) -> ChatLM:
    """Wrap the model with trainable LoRA adapters (the base weights freeze)."""
    from peft import LoraConfig, get_peft_model

    names = {n.split(".")[-1] for n, _ in lm.model.named_modules()}
    missing = [t for t in cfg.target_modules if t not in names]
    if missing:
        raise UserError(
            f"model has no module named {missing[0]!r} to adapt; it has e.g. "
            f"{', '.join(sorted(names - {''})[:8])}",
            field="model.lora.target_modules",
        )
    pcfg = LoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
    )
    model = get_peft_model(lm.model, pcfg)
    return ChatLM(model, lm.tokenizer, {**lm.meta, "lora": cfg.model_dump()})


def is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is in the lm extra
        return False
    return isinstance(model, PeftModel)


# --------------------------------------------------------------------------- artifacts


def tied_aliases(model: Any) -> dict[str, str]:
    """``{key: earlier key}`` for state-dict entries that share storage with an earlier one (tied weights)."""
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    out: dict[str, str] = {}
    for key, t in model.state_dict().items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if t.numel() and ident in seen:
            out[key] = seen[ident]
        else:
            seen[ident] = key
    return out


def unique_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The state dict with tied duplicates dropped (safetensors refuses shared storage); see :func:`load_tied`.

    The one tied-weights helper of the language domain: artifacts, checkpoints and the PPO trainer's state
    all store tied tensors (a tied LM head) once and tie them again on load.
    """
    aliases = tied_aliases(model)
    return {k: v for k, v in model.state_dict().items() if k not in aliases}


def load_tied(model: Any, state: dict[str, torch.Tensor], *, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load a :func:`unique_state_dict` (tied keys may be missing) and tie the weights again.

    Returns ``(missing, unexpected)`` keys beyond the tied aliases; ``strict`` raises ``ValueError`` on any.
    """
    aliases = tied_aliases(model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in aliases]
    if strict and (missing or unexpected):
        raise ValueError(f"state does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return missing, list(unexpected)


class TrainableState:
    """Checkpoint view of what trains: the untied state dict (re-tied on load), or only the LoRA adapters.

    safetensors refuses shared storage, so tied embeddings are saved once and tied again after loading.
    """

    def __init__(self, model: Any):
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        if is_peft(self.model):
            from peft import get_peft_model_state_dict

            return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()}
        return unique_state_dict(self.model)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if is_peft(self.model):
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, state)
            return
        load_tied(self.model, state, strict=False)


def lm_artifact(
    lm: ChatLM, base: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, meta)`` that :func:`lm_from_artifact` turns back into the same model.

    Full weights for tiny/HF models; for a LoRA-wrapped model only the adapter, with ``base`` (where the
    adapted weights come from: ``{"path": folder}`` or ``{"run": id, "name": artifact}``) in the metadata.
    """
    model = lm.model
    meta: dict[str, Any] = {k: v for k, v in lm.meta.items() if k not in ("adapter",)}
    if is_peft(model):
        from peft import get_peft_model_state_dict

        tensors = {k: v.detach() for k, v in get_peft_model_state_dict(model).items()}
        if base is None:
            base = lm.meta.get("base") or ({"path": lm.meta["path"]} if "path" in lm.meta else None)
        if base is None:
            raise ValueError("a LoRA model needs its base recorded (a folder path or a run artifact)")
        meta.update(adapter=lm.meta["lora"], base=base)
        meta["tokenizer"] = (
            {"path": lm.meta.get("tokenizer_path")}
            if lm.meta.get("tokenizer_path")
            else tokenizer_to_meta(lm.tokenizer)
        )
        return tensors, meta
    tensors = {k: v.detach() for k, v in unique_state_dict(model).items()}
    meta["hf_config"] = model.config.to_dict()
    meta["tokenizer"] = (
        {"path": lm.meta["tokenizer_path"]}
        if lm.meta.get("tokenizer_path")
        else tokenizer_to_meta(lm.tokenizer)
    )
    meta["tokenizer_fingerprint"] = tokenizer_fingerprint(lm.tokenizer)
    meta["num_parameters"] = lm.num_parameters()
    return tensors, meta


def save_lm(
    ctx: Any,
    lm: ChatLM,
    name: str = "model",
    meta: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> Any:
    """Store ``lm`` as a safetensors artifact of the running ``ctx`` (weights or adapter, plus tokenizer)."""
    if (meta or {}).get("pointer") and lm.meta.get("source") == "hf" and not is_peft(lm.model):
        # a local HF model used as-is: record where it lives, copy no weights
        m = {k: v for k, v in lm.meta.items()}
        m.update(meta or {})
        return ctx.save_artifact(name, {"pointer": torch.zeros(1)}, meta=m)
    tensors, m = lm_artifact(lm, base)
    m.update(meta or {})
    return ctx.save_artifact(name, tensors, meta=m)


def model_from_config(hf_config: dict[str, Any], auto_cls: Any) -> Any:
    """A freshly built model of ``auto_cls`` (e.g. ``AutoModelForCausalLM``) from a config dict (``to_dict()``).

    The random initialisation is drawn inside ``fork_rng``, so the caller's RNG stream is untouched: the
    weights are about to be overwritten or, for a new head, must not shift later draws.
    """
    from transformers import AutoConfig

    cfg = dict(hf_config)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.random.fork_rng():
        return auto_cls.from_config(config)


def tokenizer_from_meta_or_path(meta: dict[str, Any]) -> Any:
    tmeta = meta["tokenizer"]
    if "path" in tmeta:
        from transformers import AutoTokenizer

        return _prepare_tokenizer(AutoTokenizer.from_pretrained(tmeta["path"], local_files_only=True))
    return tokenizer_from_meta(tmeta)


def lm_from_artifact(tensors: dict[str, torch.Tensor], meta: dict[str, Any], store: Any = None) -> ChatLM:
    """Rebuild the :class:`ChatLM` that :func:`lm_artifact` stored (``store`` — a run context or a store —
    resolves a LoRA base run)."""
    if meta.get("pointer"):
        return load_hf(meta["path"], meta.get("tokenizer_path"), dtype=meta.get("dtype", "float32"))
    if "adapter" in meta:
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        base = meta["base"]
        if "run" in base:
            if store is None:
                raise ValueError("loading an adapter over a run's model needs the store")
            lm = load_lm(store, base["run"], base.get("name", "model"))
        else:
            lm = load_hf(
                base["path"], meta.get("tokenizer", {}).get("path"), dtype=meta.get("dtype", "float32")
            )
        a = meta["adapter"]
        pcfg = LoraConfig(
            task_type="CAUSAL_LM",
            r=a["r"],
            lora_alpha=a["alpha"],
            lora_dropout=a["dropout"],
            target_modules=list(a["target_modules"]),
        )
        model = get_peft_model(lm.model, pcfg)
        set_peft_model_state_dict(model, tensors)
        model = model.merge_and_unload()
        return ChatLM(model, lm.tokenizer, {**lm.meta, "merged_adapter": True})
    from transformers import AutoModelForCausalLM

    model = model_from_config(meta["hf_config"], AutoModelForCausalLM)
    missing, unexpected = load_tied(model, tensors, strict=False)
    if missing or unexpected:
        raise UserError(
            f"artifact does not match its architecture (missing {missing[:3]}, unexpected {unexpected[:3]})",
            where="artifact",
        )
    model.eval()
    tok = tokenizer_from_meta_or_path(meta)
    check_tokenizer(model, tok, where="artifact")
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    keep = {k: v for k, v in meta.items() if k not in ("hf_config", "tokenizer")}
    return ChatLM(model, tok, keep)


def load_lm(source: Any, run: Any, name: str = "model", device: str | torch.device = "cpu") -> ChatLM:
    """The model a run stored under ``name`` (its id or record), on ``device``; ``source`` is the run
    context of the run that asks (``ctx``) or, outside a run, the store."""
    run_id = run if isinstance(run, str) else run.id
    load = getattr(source, "load_artifact", None) or source.load_tensors
    tensors, meta = load(run_id, name)
    lm = lm_from_artifact(tensors, meta, source)
    lm.meta["run"] = run_id
    return lm.to(device)


def export_hf(lm: ChatLM, folder: str | Path) -> Path:
    """Write ``lm`` as a standard HF folder: config.json, model.safetensors, tokenizer files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = lm.model.merge_and_unload() if is_peft(lm.model) else lm.model
    model.save_pretrained(str(folder), safe_serialization=True)
    lm.tokenizer.save_pretrained(str(folder))
    return folder


DType = Literal["float32", "bfloat16", "float16", "auto"]
