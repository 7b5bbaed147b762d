"""Are the verdicts as often wrong as the report says? Synthetic ablation families, no training.

    python benchmarks/verdict_calibration.py [--trials 10000] [--max-seeds 10] [--margin 1.5]

Each trial is one dataset's family of effects, paired differences in units of one pair's sd:
three null effects, one inside the margin (a quarter of it), planted ones of 1, 2 and 4 sd, and
one of twice the margin (`--margin`, in the same units). Every seed gives each effect `--pairs` differences that share a seed
draw (correlation `--rho`, as the evaluation modes of one trained model share it). The pairs
go through the report's own code (`stats.per_seed`, `stats.seed_summary`, `stats.decide` with
Holm per family), once with all `--max-seeds` seeds (the fixed-sample analysis) and once seeded on
demand: from 2 seeds, one more seed a round to every effect still undecided, the family decided
with the sequential `Design` at every round, until nothing is open or the cap. It prints, for
both: the family-wise rate of a false `better`/`worse` (a null called either, or a real effect
given the wrong sign), the rate of a false `equivalent` for the twice-margin effect, the power per
planted size (the right direction), and the mean seeds an effect used. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import pandas as pd

from ablatrix.stats import Design, decide, per_seed, seed_summary

def effects(margin: float) -> dict[str, float]:
    return {"null-a": 0.0, "null-b": 0.0, "null-c": 0.0, "inside-margin": margin / 4, "1 sd": 1.0, "2 sd": 2.0,
            "4 sd": 4.0, "2 x margin": 2 * margin}


def draw(sizes: np.ndarray, trials: int, seeds: int, pairs: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Differences (trials x effects x seeds x pairs): effect + a seed draw shared by its pairs + a pair's own."""
    shared = rng.standard_normal((trials, len(sizes), seeds, 1)) * math.sqrt(rho)
    own = rng.standard_normal((trials, len(sizes), seeds, pairs)) * math.sqrt(1 - rho)
    return sizes[None, :, None, None] + shared + own


def decide_family(deltas: np.ndarray, seeds: np.ndarray, margin: float, design: Design | None) -> np.ndarray:
    """The verdicts (trials x effects) with effect e of trial t using its first seeds[t, e] seeds."""
    trials, effects, _, pairs = deltas.shape
    t, e, s, k = np.meshgrid(np.arange(trials), np.arange(effects), np.arange(deltas.shape[2]), np.arange(pairs),
                             indexing="ij")
    used = s < seeds[t, e]
    frame = pd.DataFrame({"trial": t[used], "effect": e[used], "seed": s[used], "delta": deltas[used]})
    summary = seed_summary(per_seed(frame, ["trial", "effect"]), ["trial", "effect"])
    out = decide(summary, ["trial"], "holm", margin=margin, design=design)
    verdicts = np.empty((trials, effects), dtype=object)
    verdicts[out["trial"].to_numpy(), out["effect"].to_numpy()] = out["verdict"].to_numpy()
    return verdicts


def rates(verdicts: np.ndarray, seeds: np.ndarray, planted: dict[str, float]) -> dict[str, float]:
    sizes = np.array(list(planted.values()))
    wrong = ((sizes == 0) & np.isin(verdicts, ["better", "worse"])) | ((sizes > 0) & (verdicts == "worse"))
    twice = list(planted).index("2 x margin")
    return {"familywise_false_direction": float(wrong.any(axis=1).mean()),
            "false_equivalent_2x_margin": float((verdicts[:, twice] == "equivalent").mean()),
            **{f"power_{name}": float((verdicts[:, i] == "better").mean())
               for i, name in enumerate(planted) if name.endswith(" sd")},
            "mean_seeds": float(seeds.mean()),
            **{f"seeds_{name}": float(seeds[:, i].mean()) for i, name in enumerate(planted)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--max-seeds", type=int, default=10)
    parser.add_argument("--margin", type=float, default=1.5)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rho", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    planted = effects(args.margin)
    deltas = draw(np.array(list(planted.values())), args.trials, args.max_seeds, args.pairs, args.rho,
                  np.random.default_rng(args.seed))
    start = time.perf_counter()
    cap = np.full((args.trials, len(planted)), args.max_seeds)
    fixed = rates(decide_family(deltas, cap, args.margin, None), cap, planted)

    design = Design(2, args.max_seeds)
    seeds = np.full((args.trials, len(planted)), 2)
    while True:
        verdicts = decide_family(deltas, seeds, args.margin, design)
        grow = (verdicts == "undecided") & (seeds < args.max_seeds)
        if not grow.any():
            break
        seeds = seeds + grow
    on_demand = rates(verdicts, seeds, planted)
    se = math.sqrt(0.05 * 0.95 / args.trials)
    print(f"{args.trials:,} families of {len(planted)} effects ({', '.join(f'{k} {v:g}' for k, v in planted.items())}), "
          f"{args.pairs} pairs per seed (rho {args.rho:g}), margin {args.margin:g}, cap {args.max_seeds} seeds; "
          f"Monte-Carlo se at 0.05: {se:.4f}; {time.perf_counter() - start:.0f} s")
    print(pd.DataFrame({"fixed seeds": fixed, "seeds on demand": on_demand}).round(4).to_markdown())
    print(json.dumps({"fixed": fixed, "on_demand": on_demand,
                      "seeds_saved": round(1 - on_demand["mean_seeds"] / fixed["mean_seeds"], 4),
                      "power_2sd_gap": round(fixed["power_2 sd"] - on_demand["power_2 sd"], 4)}))


if __name__ == "__main__":
    main()
