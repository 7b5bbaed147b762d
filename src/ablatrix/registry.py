"""Name -> object registries (timm style) for models, datasets, optimizers and executors."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import AblatrixError

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """A dict whose `register` decorator refuses duplicates and whose `lookup` lists the choices."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = obj
            return obj

        return add

    def lookup(self, name: str) -> T:
        if name not in self:
            raise AblatrixError(f"unknown {self.kind} {name!r}; choose from: {', '.join(sorted(self))}")
        return self[name]
