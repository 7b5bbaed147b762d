"""ablatrix: declarative ablation grids for small neural networks.

The public functions are imported on first use (PEP 562), so that `ablatrix --help` does not
wait for torch.
"""
from importlib import import_module
from typing import Any

__version__ = "0.1.0"
_PUBLIC = {"create_model": "models", "load_model": "store", "register_dataset": "data",
           "register_model": "models", "register_optimizer": "optim"}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ablatrix' has no attribute {name!r}")
    return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
