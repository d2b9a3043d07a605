"""Dataclass configs: validated when built, saved as versioned JSON, built from `key=value` strings.

Every stage config is a `@dataclass(kw_only=True)` with `kind` and `version` class variables and a `help`
string on each field, which the CLI reuses.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from compressor.errors import CompressorError, ConfigError

C = TypeVar("C")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """`{"kind", "version", "fields"}` for a config dataclass instance."""
    return {
        "kind": type(cfg).kind,
        "version": type(cfg).version,
        "fields": {f.name: _jsonable(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)},
    }


def is_int(value: Any) -> bool:
    """An integer and not a bool (`True` is an `int` to Python, never a count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a float and not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


HASH_IF_SET = "hash_if_set"  # field metadata: leave the field out of stage hashes while it holds its default


def hash_record(cfg: Any) -> dict[str, Any]:
    """`config_to_dict(cfg)` for a stage's hash, without the fields marked `hash_if_set` that hold their default: a
    setting added after runs were recorded leaves their hashes, and so `--resume`, alone until a run uses it."""
    out = config_to_dict(cfg)
    for f in dataclasses.fields(cfg):
        if f.metadata.get(HASH_IF_SET):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            if getattr(cfg, f.name) == default:
                out["fields"].pop(f.name)
    return out


def config_from_dict(cls: type[C], data: dict[str, Any], *, source: str = "config") -> C:
    """Rebuild (and so re-validate) a config saved by `config_to_dict`."""
    if not isinstance(data, dict) or "fields" not in data:
        raise ConfigError(f"{source}: not a saved config (expected keys `kind`, `version`, `fields`)")
    kind, version = data.get("kind"), data.get("version", 1)
    if kind != cls.kind:
        raise ConfigError(f"{source}: config is of kind `{kind}`, expected `{cls.kind}`")
    if not is_int(version) or version < 1:
        raise ConfigError(f"{source}: config `version` must be a positive integer; got {version!r}")
    if version > cls.version:
        raise ConfigError(
            f"{source}: config version {version!r} is newer than this compressor understands ({cls.version}); "
            "upgrade compressor"
        )
    if not isinstance(data["fields"], dict):
        raise ConfigError(f"{source}: `fields` must be a mapping of setting names to values")
    fields = dict(data["fields"])
    migrate = getattr(cls, f"_migrate_v{version}", None)
    if version < cls.version and migrate is not None:
        fields = migrate(fields)
    return build_config(cls, fields, source=source)


def build_config(cls: type[C], values: dict[str, Any], *, source: str = "config") -> C:
    """Build `cls(**values)`, turning unknown keys and wrong types into a `ConfigError` naming the key."""
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key `{unknown[0]}` for {cls.kind}; allowed: {', '.join(sorted(known)) or '(none)'}"
        )
    hints = typing.get_type_hints(cls)
    coerced = {k: _coerce(v, hints[k], k, source) for k, v in values.items()}
    try:
        return cls(**coerced)
    except TypeError as err:  # a dataclass rejects a value its __post_init__ could not handle
        raise ConfigError(f"{source}: {err}") from None


def build_strict(cls: type[C], values: dict[str, Any], source: str) -> C:
    """`build_config` whose every message starts with `source` (a recipe entry, a saved file): unknown keys list
    the allowed ones, and a config's own validation (which does not know where it was written) gets the prefix."""
    allowed = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = sorted(set(map(str, values)) - set(allowed))
    if unknown:
        raise ConfigError(f"{source}: unknown key `{unknown[0]}`; allowed: {', '.join(allowed) or '(none)'}")
    try:
        return build_config(cls, values, source=source)
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None


def parse_options(cls: type[C], options: list[str] | None, *, source: str = "--option") -> C:
    """Build a config from `["rank=16", "alpha=32"]` as typed on the command line."""
    values: dict[str, Any] = {}
    for item in options or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: expected KEY=VALUE, got {item!r}")
        values[key.strip().replace("-", "_")] = _parse_scalar(raw.strip())
    return build_config(cls, values, source=source)


def describe(cls: type) -> list[tuple[str, str, Any]]:
    """(name, help, default) of each field, for `--help` texts."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        out.append((f.name, f.metadata.get("help", ""), default))
    return out


def save_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def load_json(path: Path, *, what: str = "file") -> Any:
    """Read JSON with an error that names the file."""
    if not path.is_file():
        raise CompressorError(f"{what} `{path}` not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CompressorError(f"{what} `{path}` is not valid JSON ({err}); regenerate it") from None


def _parse_scalar(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if "," in raw:
            return [_parse_scalar(x.strip()) for x in raw.split(",") if x.strip()]
        return raw


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check (and gently convert) a value against a field's annotation."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{source}: `{key}` must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # `-O layers=3` means a one-element list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: `{key}` must be a list; got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(v, inner, key, source) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: `{key}` must be a mapping; got {value!r}")
        return value
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{source}: `{key}` must be true or false; got {value!r}")
    if hint is int:
        if not is_int(value):
            raise ConfigError(f"{source}: `{key}` must be an integer; got {value!r}")
        return value
    if hint is float:
        if not is_number(value):
            raise ConfigError(f"{source}: `{key}` must be a number; got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: `{key}` must be a string; got {value!r}")
        return value
    return value


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)["fields"]  # a nested config (a fine-tune's method options and training)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value
