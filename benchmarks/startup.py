"""How long a verb takes to answer: `ablatrix --help`, `ablatrix list` and `ablatrix report`'s
argument check, against `python -c "import torch"` in the same run.

    python benchmarks/startup.py [--repeats 5]

Each command runs --repeats times, interleaved; the fastest counts (these machines are noisy).
The last line is JSON with seconds and each command's ratio to importing torch.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"import torch": [sys.executable, "-c", "import torch"],
            "ablatrix --help": [sys.executable, "-m", "ablatrix.cli", "--help"],
            "ablatrix run --help": [sys.executable, "-m", "ablatrix.cli", "run", "--help"],
            "ablatrix list quickstart": [sys.executable, "-m", "ablatrix.cli", "list", "ablations/quickstart.toml"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in times.items()}
    for name, seconds in best.items():
        print(f"{name}: {seconds:.2f} s (fastest of {args.repeats})")
    print(json.dumps({"seconds": {k: round(v, 3) for k, v in best.items()},
                      "over_import_torch": {k: round(v / best["import torch"], 2) for k, v in best.items()}}))


if __name__ == "__main__":
    main()
