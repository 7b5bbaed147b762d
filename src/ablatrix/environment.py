"""The environment a grid's cells need in a process: its plugins imported (they register models,
datasets and optimisers) and its datasets named by path read and registered.

Parsing a grid file does neither (`spec.parse_grid`); the CLI builds the environment from the
parsed grid before expanding it into cells, and every worker process builds it again from the
same value before it trains (worker and Ray processes start with the built-ins only).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

from .errors import AblatrixError
from .sources import register_named


@dataclass(frozen=True)
class Environment:
    plugins: tuple[str, ...] = ()  # dotted module names, or absolute paths of .py files
    sources: tuple[tuple[str, str], ...] = ()  # datasets named by kind: (name, absolute path or "")

    def prepare(self, where: str = "") -> dict[str, str]:
        """Import the plugins and register the datasets in this process (each once); return each
        dataset's content hash by name (part of its runs' identity). Errors are AblatrixError
        lines that start with `where` (the grid file)."""
        import_plugins(self.plugins, f"{where}plugins")
        hashes = {}
        for name, path in self.sources:
            try:
                hashes[name] = register_named(name, path)
            except AblatrixError as exc:
                raise AblatrixError(f"{where}datasets: {exc}") from None
        return hashes

    @staticmethod
    def joined(environments: Sequence["Environment"]) -> "Environment":
        """One environment for several grids (their plugins and datasets, each once)."""
        return Environment(tuple(dict.fromkeys(p for e in environments for p in e.plugins)),
                           tuple(dict.fromkeys(s for e in environments for s in e.sources)))


def import_plugins(plugins: Iterable[str], where: str = "plugins") -> None:
    """Import modules (dotted names, or .py paths) that register models or datasets, once each."""
    for plugin in plugins:
        try:
            if plugin.endswith(".py"):
                name = f"ablatrix_plugin_{hashlib.sha1(plugin.encode()).hexdigest()[:10]}"
                if name not in sys.modules:
                    module_spec = importlib.util.spec_from_file_location(name, plugin)
                    module = importlib.util.module_from_spec(module_spec)
                    sys.modules[name] = module
                    try:
                        module_spec.loader.exec_module(module)
                    except BaseException:
                        del sys.modules[name]
                        raise
            else:
                importlib.import_module(plugin)
        except Exception as exc:
            raise AblatrixError(f"{where}: cannot import {plugin!r}: {type(exc).__name__}: {exc}") from None
