"""A bottleneck adapter that stays in a merged model, and its record in config.json.

Most methods fold into the base weights; a bottleneck adapter cannot (it is non-linear), so after merging a model
keeps one `FfnAdapter` per encoder layer (AdaMix with adapter experts: the experts averaged into one). It takes the
slot of the dropout that follows the FFN output projection (`output.dropout` in BERT-style layers, `ffn.dropout`
in DistilBERT) and runs that dropout itself, so the model's own forward calls it where Houlsby/Pfeiffer adapters
sit: after the projection, before the residual add + LayerNorm. Every stock module keeps its name and shape, so
head/FFN pruning, layer dropping and the architecture table work unchanged; width pruning cuts the adapter too.

`config.compressor_adapter` (version 1), written by `save_model` from the modules present and read by `load_model`
to rebuild them before the weights load:
    {"version": 1, "site": "ffn_output", "bottleneck": r, "activation": "gelu", "layers": [current layer indices]}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from compressor.arch.parts import arch_of, encoder_layers, hidden_width, set_module
from compressor.errors import ModelError
from compressor.schema import is_int

ADAPTER_KEY = "compressor_adapter"
VERSION = 1
SITE = "ffn_output"
ACTIVATIONS = ("gelu", "relu", "silu", "tanh")
SLOT = "dropout"  # the FFN output projection's sibling that runs right after it: dropout(ffn_out(x))


def make_activation(name: str) -> nn.Module:
    """The activation module for a name in ACTIVATIONS."""
    modules = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}
    if name not in modules:
        raise ModelError(f"adapter activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}")
    return modules[name]()


class FfnAdapter(nn.Module):
    """y = dropout(x + up(act(down(x)))): a bottleneck adapter on the FFN output, then the slot's own dropout."""

    def __init__(self, width: int, bottleneck: int, activation: str, p: float = 0.0) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck)  # weight (r, width)
        self.act = make_activation(activation)
        self.up = nn.Linear(bottleneck, width)  # weight (width, r)
        self.activation = activation
        self.p = float(p)

    @property
    def bottleneck(self) -> int:
        return int(self.down.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.up(self.act(self.down(x)))  # (..., width) → (..., r) → (..., width)
        return F.dropout(h, self.p, self.training)

    @torch.no_grad()
    def select_hidden_(self, index: torch.Tensor) -> None:
        """Keep residual-stream dimensions `index` only: input columns of `down`, output rows (and bias) of `up`."""
        w = self.down.weight
        down = nn.Linear(len(index), self.bottleneck, device=w.device, dtype=w.dtype)
        down.weight.copy_(self.down.weight.index_select(1, index))
        down.bias.copy_(self.down.bias)
        up = nn.Linear(self.bottleneck, len(index), device=w.device, dtype=w.dtype)
        up.weight.copy_(self.up.weight.index_select(0, index))
        up.bias.copy_(self.up.bias.index_select(0, index))
        for new, old in ((down, self.down), (up, self.up)):
            new.weight.requires_grad_(old.weight.requires_grad)
            new.bias.requires_grad_(old.bias.requires_grad)
        self.down, self.up = down, up


def slot_path(model: nn.Module) -> str:
    """Where, inside an encoder layer, the adapter goes: the dropout beside the FFN output projection."""
    parent = arch_of(model).ffn_out.rpartition(".")[0]
    return f"{parent}.{SLOT}" if parent else SLOT


def slots(model: nn.Module) -> dict[int, nn.Module]:
    """{layer index: current module} of the adapter slot of every encoder layer that has one (a DistilBERT layer
    whose FFN was pruned away entirely has none)."""
    path = slot_path(model)
    found = {}
    for i, layer in enumerate(encoder_layers(model)):
        try:
            found[i] = layer.get_submodule(path)
        except AttributeError:
            continue
    return found


def adapter_record(model: nn.Module) -> dict[str, Any] | None:
    """The record of the `FfnAdapter`s in `model` (None without any); they must share bottleneck and activation."""
    found = [(i, m) for i, m in slots(model).items() if isinstance(m, FfnAdapter)]
    if not found:
        return None
    shapes = {(m.bottleneck, m.activation) for _, m in found}
    if len(shapes) != 1:
        raise ModelError(f"the model's FFN adapters differ in bottleneck or activation ({sorted(shapes)})")
    bottleneck, activation = shapes.pop()
    return {
        "version": VERSION,
        "site": SITE,
        "bottleneck": bottleneck,
        "activation": activation,
        "layers": [i for i, _ in found],
    }


def sync_record_(model: nn.Module) -> None:
    """Write the record of the adapters present into `model.config` (a stale record becomes null)."""
    record = adapter_record(model)
    if record is not None or getattr(model.config, ADAPTER_KEY, None) is not None:
        setattr(model.config, ADAPTER_KEY, record)


def insert_adapters_(model: nn.Module, record: Any) -> None:
    """Put an `FfnAdapter` (its weights loaded afterwards) into the slot of every layer the saved record lists."""
    validate_record(record, model)
    by_layer = slots(model)
    layers = encoder_layers(model)
    width = hidden_width(model)
    ref = next(model.parameters())
    for i in record["layers"]:
        if i not in by_layer:
            raise ModelError(f"config.json: `{ADAPTER_KEY}` lists layer {i}, which has no `{slot_path(model)}`")
        p = float(getattr(by_layer[i], "p", 0.0))  # keep the dropout rate of the slot it replaces
        adapter = FfnAdapter(width, int(record["bottleneck"]), str(record["activation"]), p)
        set_module(layers[i], slot_path(model), adapter.to(ref.device, ref.dtype))
    setattr(model.config, ADAPTER_KEY, dict(record))


def validate_record(record: Any, model: nn.Module) -> None:
    """A ModelError naming what is wrong when a saved `compressor_adapter` cannot describe this model."""

    def bad(what: str) -> ModelError:
        return ModelError(f"config.json: `{ADAPTER_KEY}` {what}; re-save the model")

    if not isinstance(record, dict) or record.get("version") != VERSION or record.get("site") != SITE:
        raise bad("is malformed or of an unknown version")
    bottleneck, layers = record.get("bottleneck"), record.get("layers")
    if not is_int(bottleneck) or bottleneck < 1:
        raise bad("needs a positive integer `bottleneck`")
    if record.get("activation") not in ACTIVATIONS:
        raise bad(f"needs an `activation` from {', '.join(ACTIVATIONS)}")
    count = len(encoder_layers(model))
    if not (
        isinstance(layers, list)
        and layers
        and len(set(layers)) == len(layers)
        and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count for i in layers)
    ):
        raise bad(f"must list distinct layer indices below the model's {count} layers")
