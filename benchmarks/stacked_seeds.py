"""Training the seeds of one cell as one stacked model (torch.func + vmap) against one at a time.

    python benchmarks/stacked_seeds.py [--device cpu|cuda] [--seeds 3] [--samples 12000] [--repeats 2]

The small-cnn study's CNN with BatchNorm and without dropout (under vmap, dropout draws other
random numbers than separate runs, so those could never agree), Adam, one epoch per seed, each
seed with its own initialisation and batch order in both ways. Adam is elementwise, so the stacked
step is the separate steps in exact arithmetic; what differs is floating point. Prints the time
of both (fastest of --repeats), how far the parameters drift apart after the first step and after
the epoch, and each seed's accuracy on held-out samples; last line a JSON object with
`separate_over_stacked` (> 1: stacking is faster) and the largest differences.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from tabulate import tabulate
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ablatrix.models import create_model
from ablatrix.record import environment
from train_loop import MODELS, load_images, splits, sync

BATCH = 64


def initial_models(seeds: int, device: torch.device) -> list[nn.Module]:
    params = {**MODELS["small-cnn"][0], "dropout": 0.0, "batchnorm": True}
    models = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        models.append(create_model("convnet", (1, 28, 28), 10, **params).to(device))
    return models


def separate(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, orders: torch.Tensor,
             steps: int) -> tuple[float, list[dict[str, torch.Tensor]]]:
    """Each seed alone: the trainer's loop, one model after the other."""
    models = [copy.deepcopy(m) for m in models]
    sync(x.device)
    start = time.perf_counter()
    for model, order in zip(models, orders):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for i in range(steps):
            idx = order[i * BATCH:(i + 1) * BATCH]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    sync(x.device)
    return time.perf_counter() - start, [{**dict(m.named_parameters()), **dict(m.named_buffers())} for m in models]


def stacked(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, orders: torch.Tensor,
            steps: int) -> tuple[float, list[dict[str, torch.Tensor]]]:
    """All seeds at once: parameters stacked along a new first dimension, the model vmapped over it."""
    params, buffers = stack_module_state([copy.deepcopy(m) for m in models])
    skeleton = copy.deepcopy(models[0]).to("meta")

    def loss_of(p: dict, b: dict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(skeleton, (p, b), (xb,)), yb)

    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    sync(x.device)
    start = time.perf_counter()
    for i in range(steps):
        idx = orders[:, i * BATCH:(i + 1) * BATCH]
        losses = vmap(loss_of)(params, buffers, x[idx], y[idx])  # one loss per seed
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # the seeds share no parameter: each gets its own loss's gradient
        optimizer.step()
    sync(x.device)
    return time.perf_counter() - start, [{k: v[s] for k, v in {**params, **buffers}.items()}
                                         for s in range(len(models))]


def accuracy(model: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return (functional_call(model, state, (x,)).argmax(1) == y).float().mean().item()


def largest_difference(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> float:
    return max((sa[k].float() - sb[k].float()).abs().max().item() for sa, sb in zip(a, b) for k in sa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=12_000)
    parser.add_argument("--repeats", type=int, default=2, help="epochs timed each way; the fastest counts")
    args = parser.parse_args()
    device = torch.device(args.device)
    images, labels, source = load_images(args.samples)
    data = splits(images, labels, args.samples, device)
    models = initial_models(args.seeds, device)
    orders = torch.stack([torch.randperm(args.samples, generator=torch.Generator().manual_seed(s))
                          for s in range(args.seeds)]).to(device)
    steps = args.samples // BATCH

    first_step = largest_difference(separate(models, data.train_x, data.train_y, orders, 1)[1],
                                    stacked(models, data.train_x, data.train_y, orders, 1)[1])
    times: dict[str, list[float]] = {"separate": [], "stacked": []}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits both
        seconds, alone = separate(models, data.train_x, data.train_y, orders, steps)
        times["separate"].append(seconds)
        seconds, together = stacked(models, data.train_x, data.train_y, orders, steps)
        times["stacked"].append(seconds)
    a, b = min(times["separate"]), min(times["stacked"])
    skeleton = copy.deepcopy(models[0])
    rows = [[seed, f"{accuracy(skeleton, alone[seed], data.val_x, data.val_y):.4f}",
             f"{accuracy(skeleton, together[seed], data.val_x, data.val_y):.4f}"] for seed in range(args.seeds)]
    gaps = [abs(float(r[1]) - float(r[2])) for r in rows]
    print(f"{args.seeds} seeds x one epoch of {args.samples:,} samples ({source}), batch {BATCH}, on {device} "
          f"({environment(device)['device_name']}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"separate {a:.2f} s, stacked {b:.2f} s (fastest of {args.repeats}); largest parameter "
          f"difference after the first step {first_step:.2e}, after the epoch {largest_difference(alone, together):.2e}")
    print(tabulate(rows, headers=["seed", "held-out acc, separate", "held-out acc, stacked"]))
    print(json.dumps({"separate_over_stacked": round(a / b, 3), "first_step_max_abs_diff": float(f"{first_step:.3g}"),
                      "epoch_max_abs_diff": float(f"{largest_difference(alone, together):.3g}"),
                      "max_accuracy_gap": round(max(gaps), 4)}))


if __name__ == "__main__":
    main()
