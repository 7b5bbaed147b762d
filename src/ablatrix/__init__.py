"""ablatrix: declarative ablation grids for small neural networks."""
from . import datasets  # noqa: F401  registers the built-in datasets
from .data import register_dataset
from .models import create_model, register_model
from .store import load_model
from .train import register_optimizer

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "load_model", "register_dataset", "register_model", "register_optimizer"]
