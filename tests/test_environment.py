"""The environment of a grid: plugins imported and datasets by path read, once each, in any process."""
from __future__ import annotations

import numpy as np

from ablatrix.data import DATASETS
from ablatrix.environment import Environment
from ablatrix.models import MODELS


def test_joined_environments_keep_each_plugin_and_dataset_once_in_order():
    """Several grids' environments make one for the executor's workers."""
    a = Environment(("one.py", "two"), (("npz:a.npz", "/x/a.npz"),))
    b = Environment(("two", "three"), (("npz:a.npz", "/x/a.npz"), ("folder:f", "/x/f")))
    assert Environment.joined([a, b]) == Environment(("one.py", "two", "three"),
                                                     (("npz:a.npz", "/x/a.npz"), ("folder:f", "/x/f")))


def test_prepare_imports_plugins_and_registers_data_returning_content_hashes(tmp_path):
    """A plugin's model is registered and a npz file's dataset readable after prepare; a second prepare
    (another grid naming the same environment) reads nothing again and gives the same hash."""
    plugin = tmp_path / "env_models.py"
    plugin.write_text("from torch import nn\nfrom ablatrix import register_model\n\n"
                      "@register_model('env-linear')\nclass Linear(nn.Module):\n"
                      "    def __init__(self, input_shape, num_classes):\n        super().__init__()\n"
                      "        self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n"
                      "    def forward(self, x):\n        return self.net(x)\n")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 8, 8)).astype(np.float32), y=np.arange(40) % 4)
    environment = Environment((str(plugin),), (("npz:d.npz", str(tmp_path / "d.npz")),))
    try:
        hashes = environment.prepare()
        assert "env-linear" in MODELS and DATASETS["npz:d.npz"].input_shape == (1, 8, 8)
        assert list(hashes) == ["npz:d.npz"] and environment.prepare() == hashes
    finally:
        MODELS.pop("env-linear", None)
        DATASETS.pop("npz:d.npz", None)
