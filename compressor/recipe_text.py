"""The text layer of recipes: YAML 1.2 scalars, the key names, and `--set stage.key=value` overrides.

Kept apart from the dataclass tree (`compressor.recipe`) so that both read top to bottom: this module turns text
into raw Python data; `compressor.recipe` validates raw data into dataclasses.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import yaml

from compressor.errors import ConfigError

VERSION = 1
STAGES = ("analyse", "finetune", "merge", "prune", "export", "benchmark")
BASELINES = ("fp32", "int8")
TOP_KEYS = ("version", "name", "description", "model", "data", "stages")
# Keys whose values are paths: relative to the recipe file in YAML, relative to the working directory in --set.
PATH_KEYS = ("model", "data.train", "data.eval", "prune.plan")
PLAN_FROM_ANALYSE = "analyse"


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


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set `key.path=value` items (values typed as YAML) in a raw recipe; paths resolve from the working dir."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set: expected KEY=VALUE (e.g. prune.heads=0.3); got {item!r}")
        value = parse_yaml(text, source=f"--set {key}") if text.strip() else None
        if key in PATH_KEYS and isinstance(value, str) and value not in ("minilm", PLAN_FROM_ANALYSE):
            value = os.path.abspath(value)
        head, *rest = key.split(".")
        if head in STAGES:
            target = _stage_mapping(raw, head, key)
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
                f"or a stage: {', '.join(STAGES)}"
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


def _stage_mapping(raw: dict[str, Any], name: str, key: str) -> dict[str, Any]:
    """The settings mapping of stage `name` in a raw recipe (created for a bare `- merge`)."""
    stages = raw.get("stages")
    names = []
    for i, entry in enumerate(stages if isinstance(stages, list) else []):
        entry_name, body = stage_entry(entry, i, "--set")
        names.append(entry_name)
        if entry_name != name:
            continue
        if body is None:
            body = stages[i] = {name: {}}
            body = body[name]
        if not isinstance(body, dict):
            raise ConfigError(f"--set {key}: stage `{name}` is not a mapping")
        return body
    raise ConfigError(f"--set {key}: the recipe has no `{name}` stage; its stages: {', '.join(names) or '(none)'}")


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
