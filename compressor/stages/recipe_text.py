"""The text layer of recipes: YAML 1.2 scalars, the key names, and `--set stage.key=value` overrides.

Kept apart from the validation (`compressor.stages.recipe`) so that both read top to bottom: this module turns
text into raw Python data; `compressor.stages.recipe` validates raw data against the stage registry.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from typing import Any

import yaml

from compressor.checkpoint import is_hub_id
from compressor.errors import ConfigError

VERSION = 2  # 2: stages may repeat under a `name`; the benchmark's dense baselines are explicit export stages
TOP_KEYS = ("version", "name", "description", "model", "data", "stages")
# Top-level values that are paths: relative to the recipe file in YAML, relative to the working directory in --set.
TOP_PATH_KEYS = ("model", "data.train", "data.eval")


# --- YAML ---------------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 scalars: `1e-4` is a float, `off`/`no`/`on`/`yes` are strings (only true/false are
    booleans, so `fuse: off` means the string "off"); duplicate keys are refused."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"duplicate key `{key}` (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, *, source: str) -> Any:
    """YAML text → Python data, with a one-line ConfigError naming the line of a syntax error."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


# --- overrides ----------------------------------------------------------------------------------------------------


def apply_overrides(
    raw: dict[str, Any], overrides: list[str], path_keys: Callable[[str], dict[str, tuple[str, ...]]]
) -> dict[str, Any]:
    """Set `key.path=value` items (values typed as YAML) in a raw recipe; paths resolve from the working directory.

    Args:
        path_keys: for a stage key (`prune`), its path-valued settings and the words they also take
            (`{"plan": ("analyse",)}`), from the stage registry.
    """
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set: expected KEY=VALUE (e.g. prune.heads=0.3); got {item!r}")
        value = parse_yaml(text, source=f"--set {key}") if text.strip() else None
        head, *rest = key.split(".")
        if key in TOP_PATH_KEYS and isinstance(value, str) and value != "minilm":
            value = value if key == "model" and is_hub_id(value) else os.path.abspath(value)
        names = stage_names(raw)
        if head in names:
            target = _stage_mapping(raw, head, key)
            stage_key = names[head]
            words = path_keys(stage_key).get(rest[0]) if len(rest) == 1 else None
            if words is not None and isinstance(value, str) and value not in words:
                value = os.path.abspath(value)
        elif head == "data":
            if not isinstance(raw.get("data") or {}, dict):
                raise ConfigError(f"--set {key}: recipe key `data` is not a mapping")
            target = raw["data"] = raw.get("data") or {}
        elif head in TOP_KEYS and head != "stages":
            if rest:
                raise ConfigError(f"--set {key}: `{head}` is a single value; use --set {head}=VALUE")
            raw[head] = value
            continue
        else:
            raise ConfigError(
                f"--set {key}: unknown key `{head}`; allowed: {', '.join(k for k in TOP_KEYS if k != 'stages')}, "
                f"or a stage of the recipe: {', '.join(names) or '(none)'}"
            )
        if not rest:
            raise ConfigError(f"--set {key}: name a key inside `{head}`, e.g. {head}.KEY=VALUE")
        for part in rest[:-1]:
            if target.get(part) is None:
                target[part] = {}
            if not isinstance(target[part], dict):
                raise ConfigError(f"--set {key}: `{part}` is not a mapping")
            target = target[part]
        target[rest[-1]] = value
    return raw


def stage_names(raw: dict[str, Any]) -> dict[str, str]:
    """Name → stage key of every well-formed entry of a raw recipe's `stages` (a name defaults to the key)."""
    names: dict[str, str] = {}
    stages = raw.get("stages")
    for i, entry in enumerate(stages if isinstance(stages, list) else []):
        key, body = stage_entry(entry, i, "--set")
        name = body.get("name", key) if isinstance(body, dict) else key
        names.setdefault(str(name), key)
    return names


def _stage_mapping(raw: dict[str, Any], name: str, key: str) -> dict[str, Any]:
    """The settings mapping of the stage called `name` in a raw recipe (created for a bare `- merge`)."""
    stages = raw["stages"]
    for i, entry in enumerate(stages):
        entry_key, body = stage_entry(entry, i, "--set")
        entry_name = body.get("name", entry_key) if isinstance(body, dict) else entry_key
        if entry_name != name:
            continue
        if body is None:
            stages[i] = {entry_key: {}}
            body = stages[i][entry_key]
        if not isinstance(body, dict):
            raise ConfigError(f"--set {key}: stage `{name}` is not a mapping")
        return body
    raise ConfigError(f"--set {key}: the recipe has no stage `{name}`")


def stage_entry(entry: Any, index: int, source: str) -> tuple[str, Any]:
    """A `stages` item → (stage name, its mapping); `- merge` (a bare name) means no settings."""
    if isinstance(entry, str):
        return entry, None
    if isinstance(entry, dict) and len(entry) == 1:
        ((name, body),) = entry.items()
        return str(name), body
    raise ConfigError(
        f"{source}: stages[{index}] must be a one-key mapping like `- prune: {{heads: 0.5}}`; got {entry!r}"
    )
