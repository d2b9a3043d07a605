"""Physical removal of coupled groups (Torch-Pruning's rule: never prune one tensor alone).

Written by hand because transformers' `prune_heads` is gone in v5 and cannot express non-uniform FFN widths,
zero-head layers or layer removal. Every function updates `config.compressor_structure` in the same call, so
the structure metadata can never drift from the shapes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from compressor.arch.adapters import FfnAdapter
from compressor.arch.modules import (
    BiasOnly,
    EmptyIntermediate,
    HeadlessAttention,
    HeadlessSelfAttention,
    RemappedEmbedding,
)
from compressor.arch.parts import (
    arch_of,
    encoder_layers,
    get_module,
    head_size,
    hidden_width,
    set_module,
    stream_projection,
)
from compressor.arch.structure import ensure_structure, is_pruned, validate
from compressor.arch.table import ArchSpec
from compressor.errors import ModelError, PruneError


def _select_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping `index` of its outputs (dim 0) or inputs (dim 1)."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias.detach().clone() if linear.bias is not None else None
    if dim == 0 and bias is not None:
        bias = bias.index_select(0, index)
    out_f, in_f = weight.shape
    new = nn.Linear(in_f, out_f, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.weight.requires_grad_(linear.weight.requires_grad)
    if bias is not None:
        new.bias.requires_grad_(linear.bias.requires_grad)
    return new


def _check_keep(keep: Sequence[int], n: int, what: str, layer: int) -> list[int]:
    keep = sorted(int(i) for i in keep)
    if len(set(keep)) != len(keep) or any(i < 0 or i >= n for i in keep):
        raise PruneError(f"layer {layer}: {what} to keep must be distinct indices in [0, {n}); got {keep}")
    return keep


def prune_heads_(model: nn.Module, layer: int, keep: Sequence[int]) -> None:
    """Keep only heads `keep` (current indices) of encoder layer `layer`: rows of q, k, v and columns of o."""
    arch = arch_of(model)
    block = encoder_layers(model)[layer]
    entry = ensure_structure(model)["layers"][layer]
    current = entry["heads"]
    keep = _check_keep(keep, len(current), "heads", layer)
    if len(keep) == len(current):
        return
    if not current:
        return
    d = head_size(model)
    if not keep:
        set_module(block, arch.attention, _headless(block, arch))
        entry["heads"] = []
        return
    # rows of q/k/v (and of per-head projections such as DeBERTa's pos_key_proj) for head h are [h*d, (h+1)*d);
    # the same columns of o
    index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep]).to(get_module(block, arch.query).weight.device)
    for path in (arch.query, arch.key, arch.value, *_present(block, arch.head_projections)):
        set_module(block, path, _select_linear(get_module(block, path), index, dim=0))
    set_module(block, arch.attn_out, _select_linear(get_module(block, arch.attn_out), index, dim=1))
    # the attributes the family's forward reshapes with (BERT: num_attention_heads / all_head_size; DistilBERT:
    # n_heads / dim, from which it derives dim_per_head = dim // n_heads = d)
    attn = get_module(block, arch.self_attention)
    setattr(attn, arch.heads_attr, len(keep))
    setattr(attn, arch.heads_width_attr, len(keep) * d)
    entry["heads"] = [current[i] for i in keep]


def _headless(block: nn.Module, arch: ArchSpec) -> nn.Module:
    """What stands in for `arch.attention` once every head is gone: LayerNorm(x + b_o) when the block holds the
    norm, else b_o alone (the layer adds the residual and applies its own norm, which stays)."""
    out = get_module(block, arch.attn_out)
    if arch.attn_norm.startswith(arch.attention + "."):
        norm = get_module(block, arch.attn_norm)
        headless: nn.Module = HeadlessAttention(out.out_features, norm.eps)
        headless.LayerNorm.load_state_dict(norm.state_dict())
    else:
        headless = HeadlessSelfAttention(out.out_features)
    headless.to(out.weight.device, out.weight.dtype)
    with torch.no_grad():
        headless.bias.copy_(out.bias)
    return headless


def _present(block: nn.Module, paths: Sequence[str]) -> list[str]:
    """The paths of `paths` this layer has (DeBERTa builds pos_key_proj only without share_att_key)."""
    found = []
    for path in paths:
        try:
            block.get_submodule(path)
        except AttributeError:
            continue
        found.append(path)
    return found


def prune_ffn_(model: nn.Module, layer: int, keep: Sequence[int]) -> None:
    """Keep only FFN neurons `keep` (current indices): rows of the FFN-in linear, columns of FFN-out."""
    arch = arch_of(model)
    block = encoder_layers(model)[layer]
    entry = ensure_structure(model)["layers"][layer]
    width = entry["intermediate"]
    keep = _check_keep(keep, width, "FFN neurons", layer)
    if len(keep) == width or width == 0:
        return
    neurons = entry.get("neurons")
    if neurons is None:
        neurons = list(range(width))
    if not keep:
        out = get_module(block, arch.ffn_out)
        bias_only = BiasOnly(out.out_features).to(out.weight.device, out.weight.dtype)
        with torch.no_grad():
            bias_only.bias.copy_(out.bias)
        ffn_in_parent, ffn_out_parent = arch.ffn_in.rpartition(".")[0], arch.ffn_out.rpartition(".")[0]
        if ffn_in_parent == ffn_out_parent:  # one module holds the whole FFN (DistilBERT's `ffn`): it becomes b_out
            if any(isinstance(m, FfnAdapter) for m in get_module(block, ffn_in_parent).modules()):
                raise PruneError(f"layer {layer}: removing every FFN neuron would drop its bottleneck adapter")
            set_module(block, ffn_in_parent, bias_only)
        else:  # BERT: the input side passes an empty activation on, the output side returns its bias
            set_module(block, ffn_in_parent, EmptyIntermediate())
            set_module(block, arch.ffn_out, bias_only)
    else:
        index = torch.tensor(keep, device=get_module(block, arch.ffn_in).weight.device)
        set_module(block, arch.ffn_in, _select_linear(get_module(block, arch.ffn_in), index, dim=0))
        set_module(block, arch.ffn_out, _select_linear(get_module(block, arch.ffn_out), index, dim=1))
    entry["intermediate"] = len(keep)
    entry["neurons"] = [neurons[i] for i in keep]


def drop_layers_(model: nn.Module, keep: Sequence[int]) -> None:
    """Remove whole encoder layers, keeping those at current positions `keep` (at least one)."""
    layers = encoder_layers(model)
    keep = _check_keep(keep, len(layers), "layers", -1)
    if not keep:
        raise PruneError("a model must keep at least one encoder layer")
    if len(keep) == len(layers):
        return
    structure = ensure_structure(model)
    kept_modules = [layers[i] for i in keep]
    arch = arch_of(model)
    set_module(model, arch.layers, nn.ModuleList(kept_modules))
    structure["layers"] = [structure["layers"][i] for i in keep]
    arch.set_num_layers(model.config, len(keep))


def prune_hidden_(model: nn.Module, keep: Sequence[int]) -> None:
    """Keep only dimensions `keep` (current indices) of the residual stream, everywhere it is read or written.

    One mask over the stream (CoFi's hidden-dimension pruning, Xia et al. 2022): the embedding tables' columns
    and the embedding LayerNorm; per layer, the input columns of q, k, v and the FFN-in linear, the output rows
    (and biases) of the attention output projection and the FFN-out linear, both LayerNorms (and the parts a
    headless or FFN-less layer keeps); the pooler's input columns. The LayerNorms then normalise over the kept
    dimensions only, so the function changes: recover with distillation. `config.hidden_size` stays the source
    width (head sizes are derived from it); the kept dimensions are recorded in the structure.
    """
    arch = arch_of(model)
    if arch.width_refusal:
        raise PruneError(f"hidden-width pruning is not supported for {arch.model_type}: {arch.width_refusal}")
    structure = ensure_structure(model)
    hidden = structure.get("hidden") or {"source": arch.hidden_size(model.config), "kept": None}
    width = hidden_width(model)
    keep = _check_keep(keep, width, "hidden dimensions", -1)
    if not keep:
        raise PruneError("a model must keep at least one hidden dimension")
    if len(keep) == width:
        return
    current = hidden["kept"] if hidden["kept"] is not None else list(range(width))
    device = get_module(model, arch.word_embeddings).weight.device
    index = torch.tensor(keep, device=device)
    projection = stream_projection(model)
    if projection is not None:  # the stream starts at the projection's outputs: the embeddings keep their width
        set_module(model, arch.embeddings_project, _select_linear(projection, index, dim=0))
    else:
        for path in arch.stream_embeddings():
            _select_columns_(get_module(model, path), index)
        if arch.embeddings_norm:
            set_module(model, arch.embeddings_norm, _select_norm(get_module(model, arch.embeddings_norm), index))
    for block in encoder_layers(model):
        for module in list(block.modules()):
            if isinstance(module, (HeadlessAttention, HeadlessSelfAttention, BiasOnly)):
                module.bias = nn.Parameter(module.bias.detach().index_select(0, index).clone())
            if isinstance(module, FfnAdapter):  # a merged bottleneck adapter reads and writes the stream too
                module.select_hidden_(index)
        for name, module in list(block.named_modules()):
            if isinstance(module, nn.LayerNorm):
                set_module(block, name, _select_norm(module, index))
        for role, dim in (("query", 1), ("key", 1), ("value", 1), ("ffn_in", 1), ("attn_out", 0), ("ffn_out", 0)):
            try:
                linear = get_module(block, getattr(arch, role))
            except AttributeError:  # a layer without heads has no q/k/v/o
                continue
            if isinstance(linear, nn.Linear):
                set_module(block, getattr(arch, role), _select_linear(linear, index, dim=dim))
    if arch.pooler:
        set_module(model, arch.pooler, _select_linear(get_module(model, arch.pooler), index, dim=1))
    structure["hidden"] = {"source": hidden["source"], "kept": [current[i] for i in keep]}


def _select_columns_(embedding: nn.Module, index: torch.Tensor) -> None:
    """Keep columns `index` of an embedding table (an nn.Embedding or a vocabulary-pruned RemappedEmbedding).

    Only `weight` changes: a RemappedEmbedding's id map or codes index and weight its rows, which stay."""
    weight = embedding.weight.detach().index_select(1, index).clone()
    new = nn.Parameter(weight, requires_grad=embedding.weight.requires_grad)
    embedding.weight = new
    embedding.embedding_dim = weight.shape[1]


def _select_norm(norm: nn.LayerNorm, index: torch.Tensor) -> nn.LayerNorm:
    """A LayerNorm over the dimensions `index` only, with their gains and biases."""
    new = nn.LayerNorm(len(index), eps=norm.eps, device=norm.weight.device, dtype=norm.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(norm.weight.index_select(0, index))
        new.bias.copy_(norm.bias.index_select(0, index))
    new.weight.requires_grad_(norm.weight.requires_grad)
    new.bias.requires_grad_(norm.bias.requires_grad)
    return new


def build_shapes_(model: nn.Module, structure: dict[str, Any]) -> None:
    """Shrink a full-size model (weights irrelevant) to `structure`'s shapes, so a saved state dict loads."""
    validate(structure, model)
    model.config.compressor_structure = None
    full_layers = arch_of(model).num_layers(model.config)
    if full_layers != len(structure["layers"]):
        # the saved config already has the kept layer count; rebuild against the source count
        raise ModelError("config.json: `num_hidden_layers` disagrees with `compressor_structure`; re-save the model")
    apply_counts_(model, structure)
    if structure.get("hidden"):
        prune_hidden_(model, list(range(len(structure["hidden"]["kept"]))))
    model.config.compressor_structure = copy.deepcopy(structure)
    if structure.get("vocab"):
        build_vocab_shape_(model, structure["vocab"])


def apply_counts_(model: nn.Module, structure: dict[str, Any]) -> None:
    """Give each layer the head count and FFN width of `structure` (first units kept; for shape rebuilding)."""
    for i, entry in enumerate(structure["layers"]):
        prune_heads_(model, i, list(range(len(entry["heads"]))))
        prune_ffn_(model, i, list(range(entry["intermediate"])))


def apply_structure_(model: nn.Module, structure: dict[str, Any]) -> None:
    """Prune an unpruned model to exactly `structure` (original indices), e.g. to re-create a saved run's shapes."""
    current = ensure_structure(model)
    if is_pruned(current):
        raise PruneError("apply_structure_ needs an unpruned model")
    if structure["source_layers"] != current["source_layers"] or structure["source_heads"] != current["source_heads"]:
        raise PruneError(
            f"structure is for a model with {structure['source_layers']} layers × {structure['source_heads']} heads; "
            f"this model has {current['source_layers']} × {current['source_heads']}"
        )
    for entry in structure["layers"]:
        i = entry["source"]
        prune_heads_(model, i, entry["heads"])
        neurons = entry.get("neurons")
        prune_ffn_(model, i, neurons if neurons is not None else list(range(entry["intermediate"])))
    drop_layers_(model, [e["source"] for e in structure["layers"]])
    if structure.get("hidden"):
        prune_hidden_(model, structure["hidden"]["kept"])


def build_vocab_shape_(model: nn.Module, vocab: dict[str, Any]) -> None:
    """Give a freshly built model the pruned embedding shape recorded in its structure."""
    arch = arch_of(model)
    emb = get_module(model, arch.word_embeddings)
    dim = emb.weight.shape[1]
    codes = int(vocab.get("codes", 0))  # 0 in checkpoints of the unk/nearest fallbacks (and older ones)
    new = RemappedEmbedding(int(vocab["source_size"]), int(vocab["kept"]), dim, codes=codes)
    set_module(model, arch.word_embeddings, new)
