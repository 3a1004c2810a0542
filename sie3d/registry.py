"""Name -> factory registries: how a stage offers interchangeable implementations by name.

A stage declares ``DETECTORS = Registry("face detector")`` and registers each implementation with a
decorator, ``@DETECTORS.register("dlib")``; callers pick one with ``DETECTORS.get(name)``, which
raises one ``ValueError`` listing the valid names. The configuration (at the base, importing no
stage) types the matching field with ``typing.Literal`` of the same names, so an unknown name fails
when the config loads; ``tests/test_registries.py`` keeps both lists equal.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered mapping name -> implementation (a class or a factory function) of one kind."""

    def __init__(self, kind: str):
        self.kind = kind  # what an entry is, for messages: "emotion classifier"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``name`` -> the decorated object (returned unchanged); names are unique."""
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry
        return add

    def get(self, name: str) -> T:
        """The implementation registered as ``name``; ValueError naming the valid ones otherwise."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} '{name}'; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries
