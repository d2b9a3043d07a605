"""A tiny named registry: one instance per extension point, filled by plain calls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from compressor.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps the names users type (`pruning-adapter`, `head-gradient`) to implementations."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.what} `{name}` is already registered")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ConfigError(f"unknown {self.what} `{name}`; known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
