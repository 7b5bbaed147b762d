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

`--case` draws other data through the same code: `skewed` (the normal draw, but one seed in
twenty diverges by 10 pair sd, the others shifted to keep the mean: a skewed, mean-zero seed
distribution), and accuracies counted on a finite test set (`digits`: 359 images, accuracy about
96%; `near-100`: 359 images at about 98.5%, where most pairs tie), in pp against the default margin
of 0.5 pp with effects of 0 (three), 0.1, 0.5, 1 and 2 pp. Those cases add the fixed-sample
analysis at 2 seeds (a first quickstart) and the same analyses without the spread floors
(`stats.spread_floor`) as before them; `flagged` is the share of families with a false direction in
which the report names an outlying seed of the wrong effect.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import pandas as pd

from ablatrix.boundaries import Design
from ablatrix.stats import decide, look_floors, per_seed, seed_summary, spread_floor

ACCURACY_EFFECTS = {"null-a": 0.0, "null-b": 0.0, "null-c": 0.0, "inside-margin": 0.1, "0.5 pp": 0.5, "1 pp": 1.0,
                    "2 pp": 2.0, "2 x margin": 1.0}
ACCURACY_CASES = {"digits": (359, 0.96), "near-100": (359, 0.985)}  # test images, mean accuracy

def effects(margin: float) -> dict[str, float]:
    return {"null-a": 0.0, "null-b": 0.0, "null-c": 0.0, "inside-margin": margin / 4, "1 sd": 1.0, "2 sd": 2.0,
            "4 sd": 4.0, "2 x margin": 2 * margin}


def draw(sizes: np.ndarray, trials: int, seeds: int, pairs: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Differences (trials x effects x seeds x pairs): effect + a seed draw shared by its pairs + a pair's own."""
    shared = rng.standard_normal((trials, len(sizes), seeds, 1)) * math.sqrt(rho)
    own = rng.standard_normal((trials, len(sizes), seeds, pairs)) * math.sqrt(1 - rho)
    return sizes[None, :, None, None] + shared + own


def draw_skewed(sizes: np.ndarray, trials: int, seeds: int, pairs: int, rho: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`draw`, plus one seed in twenty diverging by +10 pair sd and the others by -10/19 (mean 0);
    and which seeds diverged (trials x effects x seeds)."""
    diverged = rng.random((trials, len(sizes), seeds, 1)) < 1 / 20
    return draw(sizes, trials, seeds, pairs, rho, rng) + np.where(diverged, 10.0, -10.0 / 19), diverged[..., 0]


def draw_accuracy(effects_pp: np.ndarray, trials: int, seeds: int, pairs: int, images: int, accuracy: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Pair differences in pp of accuracies counted on `images` test images: each model's true
    accuracy is the mean + the pair's setting (0.5 pp sd) + the seed's draw (0.3 pp, shared by the
    two models of a pair) + its own (0.3 pp); its count is binomial."""
    shape = (trials, len(effects_pp), seeds, pairs)
    setting = 0.005 * rng.standard_normal((trials, len(effects_pp), 1, pairs))
    shared = 0.003 * rng.standard_normal((trials, len(effects_pp), seeds, 1))
    base = np.clip(accuracy + setting + shared + 0.003 * rng.standard_normal(shape), 0, 1)
    changed = np.clip(accuracy + effects_pp[None, :, None, None] / 100 + setting + shared
                      + 0.003 * rng.standard_normal(shape), 0, 1)
    return 100 * (rng.binomial(images, changed) - rng.binomial(images, base)) / images


def decide_family(deltas: np.ndarray, seeds: np.ndarray, margin: float, design: Design | None,
                  step: float | None = None, floors: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The verdicts (trials x effects) with effect e of trial t using its first seeds[t, e] seeds,
    and whether the report names an outlying seed for each. `step`: the pp of one test image."""
    trials, effects, _, pairs = deltas.shape
    t, e, s, k = np.meshgrid(np.arange(trials), np.arange(effects), np.arange(deltas.shape[2]), np.arange(pairs),
                             indexing="ij")
    used = s < seeds[t, e]
    frame = pd.DataFrame({"trial": t[used], "effect": e[used], "pair": k[used], "seed": s[used],
                          "delta": deltas[used]})
    if step is not None:
        frame["step"] = step
    by = ["trial", "effect"]
    floor = None
    if floors:  # as the report floors them: each look of a sequential analysis with its own seeds
        floor = spread_floor(frame, by)
        if design is not None:
            floor = floor.merge(look_floors(frame, by, range(deltas.shape[2])), on=by)
    summary = seed_summary(per_seed(frame, by), by, floors=floor)
    out = decide(summary, ["trial"], "holm", margin=margin, design=design)
    verdicts = np.empty((trials, effects), dtype=object)
    flagged = np.zeros((trials, effects), dtype=bool)
    at = out["trial"].to_numpy(), out["effect"].to_numpy()
    verdicts[at] = out["verdict"].to_numpy()
    flagged[at] = out["outlier_seeds"].to_numpy() != ""
    return verdicts, flagged


def rates(verdicts: np.ndarray, seeds: np.ndarray, planted: dict[str, float],
          flagged: np.ndarray | None = None, diverged: np.ndarray | None = None) -> dict[str, float]:
    sizes = np.array(list(planted.values()))
    wrong = ((sizes == 0) & np.isin(verdicts, ["better", "worse"])) | ((sizes > 0) & (verdicts == "worse"))
    twice = list(planted).index("2 x margin")
    out = {"familywise_false_direction": float(wrong.any(axis=1).mean()),
           "false_equivalent_2x_margin": float((verdicts[:, twice] == "equivalent").mean()),
           **{f"power_{name}": float((verdicts[:, i] == "better").mean())
              for i, name in enumerate(planted) if name.endswith((" sd", " pp"))},
           "mean_seeds": float(seeds.mean()),
           **{f"seeds_{name}": float(seeds[:, i].mean()) for i, name in enumerate(planted)}}
    if flagged is not None:
        families = wrong.any(axis=1)
        out["flagged"] = float((wrong & flagged).any(axis=1)[families].mean()) if families.any() else math.nan
    if diverged is not None:  # was a diverging seed among those a wrong verdict used?
        seen = (diverged & (np.arange(diverged.shape[2]) < seeds[..., None])).any(axis=2)
        families = (wrong & seen).any(axis=1)
        out["false_direction_diverged_seen"] = float(families.mean())
        out["false_direction_diverged_unseen"] = float((wrong & ~seen).any(axis=1).mean())
        out["flagged_when_seen"] = float((wrong & seen & flagged).any(axis=1)[families].mean()) \
            if families.any() else math.nan
    return out


def on_demand(deltas: np.ndarray, margin: float, max_seeds: int, **kw) -> tuple[np.ndarray, ...]:
    """From 2 seeds, one more seed a round to every effect still undecided, until none or the cap."""
    design = Design(2, max_seeds)
    seeds = np.full(deltas.shape[:2], 2)
    while True:
        verdicts, flagged = decide_family(deltas, seeds, margin, design, **kw)
        grow = (verdicts == "undecided") & (seeds < max_seeds)
        if not grow.any():
            return verdicts, flagged, seeds
        seeds = seeds + grow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="normal", choices=["normal", "skewed", *ACCURACY_CASES])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--max-seeds", type=int, default=10)
    parser.add_argument("--margin", type=float, help="in pair sd (default 1.5); accuracy cases: pp (default 0.5)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rho", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    accuracy = args.case in ACCURACY_CASES
    margin = args.margin if args.margin is not None else 0.5 if accuracy else 1.5
    planted = ACCURACY_EFFECTS if accuracy else effects(margin)
    sizes = np.array(list(planted.values()))
    if accuracy:
        images, mean = ACCURACY_CASES[args.case]
        deltas = draw_accuracy(sizes, args.trials, args.max_seeds, args.pairs, images, mean, rng)
        kw = {"step": 100 / images}
    elif args.case == "skewed":
        deltas, diverged = draw_skewed(sizes, args.trials, args.max_seeds, args.pairs, args.rho, rng)
        kw = {}
    else:
        deltas, kw = draw(sizes, args.trials, args.max_seeds, args.pairs, args.rho, rng), {}
    extra = {"diverged": diverged} if args.case == "skewed" else {}
    start = time.perf_counter()
    columns = {}
    variants = [("", True)] + ([(" without floors", False)] if args.case != "normal" else [])
    for suffix, floors in variants:
        counts = [2, args.max_seeds] if args.case != "normal" else [args.max_seeds]
        for n in counts:
            cap = np.full((args.trials, len(planted)), n)
            verdicts, flagged = decide_family(deltas, cap, margin, None, floors=floors, **kw)
            columns[f"fixed, {n} seeds{suffix}"] = rates(verdicts, cap, planted, flagged, **extra)
        verdicts, flagged, seeds = on_demand(deltas, margin, args.max_seeds, floors=floors, **kw)
        columns[f"on demand{suffix}"] = rates(verdicts, seeds, planted, flagged, **extra)
    se = math.sqrt(0.05 * 0.95 / args.trials)
    print(f"case {args.case}: {args.trials:,} families of {len(planted)} effects "
          f"({', '.join(f'{k} {v:g}' for k, v in planted.items())}), {args.pairs} pairs per seed"
          + ("" if accuracy else f" (rho {args.rho:g})") + f", margin {margin:g}, cap {args.max_seeds} seeds; "
          f"Monte-Carlo se at 0.05: {se:.4f}; {time.perf_counter() - start:.0f} s")
    print(pd.DataFrame(columns).round(4).to_markdown())
    fixed, demand = columns[f"fixed, {args.max_seeds} seeds"], columns["on demand"]
    print(json.dumps({"case": args.case, **columns,
                      "seeds_saved": round(1 - demand["mean_seeds"] / fixed["mean_seeds"], 4),
                      "power_gap": {k: round(fixed[k] - demand[k], 4) for k in fixed if k.startswith("power_")}}))


if __name__ == "__main__":
    main()
