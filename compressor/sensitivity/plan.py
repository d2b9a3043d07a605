"""`plan.json`: what to keep, per layer (`compressor.prune.units.apply_plan_` prunes a model to it exactly).

Format (version 1); every index is relative to the model the plan was made for (its *current* layers, heads and
neurons, so a plan for an already-pruned model refers to that model's positions):

    {"kind": "compressor-plan", "version": 1, "scorer": "head-gradient",
     "budget": {"spec": "params=0.6", "metric": "params", "value": 0.6, "seq_len": 128, "threads": null,
                "target": 6.4e6},
     "model": {"model_type": "bert", "hidden_size": 384, "head_size": 32, "num_layers": 6,
               "heads": [12, ...], "intermediate": [1536, ...], "source_layers": [0, ...]},
     "min_heads": 1, "min_neurons": 1,
     "layers": [{"index": 0, "source": 0, "dropped": false, "heads": [0, 2, ...], "neurons": [1, 5, ...]}, ...],
     "predicted": {"params": {"before": n, "after": n, "fraction": f}, "flops": {...}, "latency_ms": {...} | null}}

`heads`/`neurons` list the kept units (sorted); a dropped layer keeps nothing and is removed whole.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from compressor.arch.parts import head_size, hidden_width
from compressor.errors import ConfigError, PruneError
from compressor.schema import is_int, save_json
from compressor.sensitivity.cost import layer_shapes


@dataclass
class LayerPlan:
    """Kept units of one current layer; `dropped` removes the layer whole."""

    index: int
    source: int
    heads: list[int]
    neurons: list[int]
    dropped: bool = False


@dataclass
class Plan:
    """A pruning plan: per current layer, the head and FFN-neuron indices to keep (see the module docstring)."""

    kind: ClassVar[str] = "compressor-plan"
    version: ClassVar[int] = 1

    layers: list[LayerPlan]
    model: dict[str, Any]
    budget: dict[str, Any] = field(default_factory=dict)
    scorer: str | None = None
    min_heads: int = 0
    min_neurons: int = 0
    hidden: list[int] | None = None  # kept dimensions of the residual stream (current indices); None: all
    predicted: dict[str, Any] = field(default_factory=dict)

    @property
    def dropped_layers(self) -> list[int]:
        return [entry.index for entry in self.layers if entry.dropped]

    @property
    def kept_layers(self) -> list[int]:
        return [entry.index for entry in self.layers if not entry.dropped]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "scorer": self.scorer,
            "budget": self.budget,
            "model": self.model,
            "min_heads": self.min_heads,
            "min_neurons": self.min_neurons,
            "hidden": self.hidden,
            "layers": [asdict(entry) for entry in self.layers],
            "predicted": self.predicted,
        }

    def save(self, path: Path) -> Path:
        save_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "plan") -> Plan:
        """Rebuild and validate a plan (a ConfigError naming `source` and the field when malformed)."""
        if not isinstance(data, dict) or data.get("kind") != cls.kind:
            raise ConfigError(f'{source}: not a compressor plan (expected "kind": "{cls.kind}")')
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError(f"{source}: `version` must be a positive integer; got {version!r}")
        if version > cls.version:
            raise ConfigError(
                f"{source}: plan version {version} is newer than this compressor understands ({cls.version}); "
                "upgrade compressor"
            )
        model = data.get("model")
        if not isinstance(model, dict):
            raise ConfigError(f"{source}: `model` (the fingerprint of the model the plan is for) is missing")
        heads, widths = model.get("heads"), model.get("intermediate")
        num_layers = model.get("num_layers")
        if not (_int_list(heads) and _int_list(widths) and isinstance(num_layers, int)) or not (
            len(heads) == len(widths) == num_layers
        ):
            raise ConfigError(f"{source}: `model` needs `num_layers` and one `heads` and `intermediate` per layer")
        raw_layers = data.get("layers")
        if not isinstance(raw_layers, list) or len(raw_layers) != num_layers:
            raise ConfigError(f"{source}: `layers` must have one entry per model layer ({num_layers})")
        layers = []
        for i, raw in enumerate(raw_layers):
            if not isinstance(raw, dict) or raw.get("index") != i:
                raise ConfigError(f'{source}: `layers[{i}]` must be an object with "index": {i}')
            source_id = raw.get("source", i)
            if not isinstance(source_id, int) or isinstance(source_id, bool):
                raise ConfigError(f"{source}: `layers[{i}].source` must be an integer; got {source_id!r}")
            dropped = raw.get("dropped", False)
            if not isinstance(dropped, bool):
                raise ConfigError(f"{source}: `layers[{i}].dropped` must be true or false")
            kept = {}
            for what, limit in (("heads", heads[i]), ("neurons", widths[i])):
                values = raw.get(what)
                if (
                    not _int_list(values)
                    or len(set(values)) != len(values)
                    or any(v < 0 or v >= limit for v in values)
                ):
                    raise ConfigError(
                        f"{source}: `layers[{i}].{what}` must list distinct indices in [0, {limit}); got {values!r}"
                    )
                kept[what] = sorted(values)
            layers.append(
                LayerPlan(
                    index=i,
                    source=source_id,
                    heads=kept["heads"],
                    neurons=kept["neurons"],
                    dropped=dropped,
                )
            )
        if all(entry.dropped for entry in layers):
            raise ConfigError(f"{source}: the plan drops every layer; a model must keep at least one")
        for name in ("min_heads", "min_neurons"):
            value = data.get(name, 0)
            if not is_int(value) or value < 0:
                raise ConfigError(f"{source}: `{name}` must be a non-negative integer; got {value!r}")
        for name in ("budget", "predicted"):
            if not isinstance(data.get(name) or {}, dict):
                raise ConfigError(f"{source}: `{name}` must be a mapping; got {data.get(name)!r}")
        if data.get("scorer") is not None and not isinstance(data["scorer"], str):
            raise ConfigError(f"{source}: `scorer` must be a scorer name; got {data['scorer']!r}")
        hidden = data.get("hidden")
        width = model.get("hidden_size")
        if hidden is not None and not (
            _int_list(hidden)
            and hidden
            and isinstance(width, int)
            and len(set(hidden)) == len(hidden)
            and all(0 <= d < width for d in hidden)
        ):
            raise ConfigError(
                f"{source}: `hidden` must list distinct kept dimensions in [0, {width}) or be null; got {hidden!r}"
            )
        return cls(
            layers=layers,
            model=model,
            budget=dict(data.get("budget") or {}),
            scorer=data.get("scorer"),
            min_heads=int(data.get("min_heads", 0)),
            min_neurons=int(data.get("min_neurons", 0)),
            hidden=None if hidden is None else sorted(hidden),
            predicted=dict(data.get("predicted") or {}),
        )

    @classmethod
    def load(cls, path: Path | str) -> Plan:
        """Read and validate a plan.json."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"plan `{path}` not found; create one with `compressor analyse --budget ...`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"plan `{path}` is not valid JSON ({err}); regenerate it") from None
        return cls.from_dict(data, source=f"plan `{path}`")

    def summary(self) -> list[dict[str, Any]]:
        """Per layer: source id, heads kept/total, neurons kept/total, dropped."""
        return [
            {
                "layer": e.index,
                "source": e.source,
                "dropped": e.dropped,
                "heads": f"{0 if e.dropped else len(e.heads)}/{self.model['heads'][e.index]}",
                "neurons": f"{0 if e.dropped else len(e.neurons)}/{self.model['intermediate'][e.index]}",
            }
            for e in self.layers
        ]


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def fingerprint(model: nn.Module) -> dict[str, Any]:
    """The shape a plan must match: layer count, heads and FFN width per layer, hidden and head size."""
    shapes = layer_shapes(model)
    return {
        "model_type": model.config.model_type,
        "hidden_size": hidden_width(model),
        "head_size": head_size(model),
        "num_layers": len(shapes),
        "heads": [s.heads for s in shapes],
        "intermediate": [s.neurons for s in shapes],
        "source_layers": [s.source for s in shapes],
    }


def _shape_text(fp: dict[str, Any]) -> str:
    return (
        f"{fp.get('num_layers')} layers, hidden {fp.get('hidden_size')}, heads {fp.get('heads')}, "
        f"FFN widths {fp.get('intermediate')}"
    )


def check_plan_fits(model: nn.Module, plan: Plan) -> None:
    """PruneError when `plan` was made for a model of another shape."""
    have = fingerprint(model)
    want = plan.model
    keys = ("hidden_size", "num_layers", "heads", "intermediate")
    if any(have.get(k) != want.get(k) for k in keys) or want.get("head_size", have["head_size"]) != have["head_size"]:
        raise PruneError(
            f"the plan is for a model with {_shape_text(want)}, but this model has {_shape_text(have)}; "
            "run `compressor analyse` on this model to make a plan for it"
        )
