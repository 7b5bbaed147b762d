"""Verdicts from per-seed contrasts of fractional designs, and what an aliased interaction does to them.
Synthetic accuracies, no training.

    python benchmarks/design_calibration.py [--trials 2000] [--seeds 3 5 10] [--interaction 2.0]

Six two-level factors A..F on a test set of 359 images (digits' size) at about 96% accuracy. Each
configuration's true accuracy is the mean + half of each planted main effect (pp, the high level
minus the low) times its -1/+1 code + a seed draw shared by every configuration of the seed (0.3
pp) + the run's own draw (0.3 pp); its count is binomial. Planted main effects: A, B, E null, C
0.5 pp, D 1 pp, F 2 pp. The runs go through the report's own code: `designs.design_combos` and
`designs.aliasing` for the design, `contrasts.main_contrasts` and `contrasts.interaction_contrasts`
per seed, the resolution floor scaled as `effects` scales it, `stats.summarize_deltas` and
`stats.decide` (Holm over the dataset's main effects and estimable interactions, margin 0.5 pp).

Part 1, calibration: the 2^(6-2) fraction of resolution IV (16 runs a seed), no interaction; the
family-wise rate of a false `better`/`worse` (a null main effect or interaction called either),
the power per planted size, for each seed count.

Part 2, a planted two-factor interaction (`--interaction` pp, A x B; everything else as above, the
largest seed count): in the resolution-IV fraction A x B shares its chain with C x E and D x F and
no main effect, so the chain's estimate is detected and its sentence names both partners; in the
resolution-III fraction (8 runs) it shares the chain of a main effect, E = AB here, so E's estimate
is E's effect plus half the interaction: a null E is called better, and the report's row for E
names AB among its aliases (`flagged`). The last line is JSON.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import pandas as pd

from ablatrix.contrasts import interaction_contrasts, main_contrasts
from ablatrix.designs import DesignSpec, aliasing, design_combos
from ablatrix.stats import decide, summarize_deltas

FACTORS = list("ABCDEF")
PLANTED = {"A": 0.0, "B": 0.0, "C": 0.5, "D": 1.0, "E": 0.0, "F": 2.0}
IMAGES, ACCURACY, MARGIN = 359, 0.96, 0.5
BLOCKS = ["trial", "dataset", "seed"]


def draw(design: DesignSpec, trials: int, seeds: int, interaction: float, rng: np.random.Generator) -> pd.DataFrame:
    """Accuracies (%) of every run: trial x seed x configuration of the design."""
    combos = design_combos({f: [-1, 1] for f in FACTORS}, design)
    x = np.array([[c[f] for f in FACTORS] for c in combos], dtype=float)  # configurations x factors
    truth = ACCURACY + (x @ np.array(list(PLANTED.values())) / 2 + interaction * x[:, 0] * x[:, 1] / 4) / 100
    shared = 0.003 * rng.standard_normal((trials, seeds, 1))
    p = np.clip(truth[None, None, :] + shared + 0.003 * rng.standard_normal((trials, seeds, len(combos))), 0, 1)
    correct = rng.binomial(IMAGES, p)
    t, s, c = np.meshgrid(np.arange(trials), np.arange(seeds), np.arange(len(combos)), indexing="ij")
    frame = pd.DataFrame({"trial": t.ravel(), "dataset": "digits", "seed": s.ravel(),
                          "accuracy": 100 * correct.ravel() / IMAGES})
    for j, f in enumerate(FACTORS):
        frame[f] = x[c.ravel(), j]
    return frame


def verdicts(runs: pd.DataFrame, design: DesignSpec) -> pd.DataFrame:
    """The report's decisions for every trial: main effects and the estimable interaction chains."""
    alias = aliasing(design, len(FACTORS))
    step = 100 / IMAGES
    rows, chains = [], set()
    for f in FACTORS:
        deltas = main_contrasts(runs, f, [-1.0, 1.0], BLOCKS, "accuracy")
        deltas["step"] = step * np.sqrt(deltas.pop("weight").astype(float) / 2)
        summary = summarize_deltas(deltas.drop(columns=["level", "baseline", "comparison"]), ["trial", "dataset"])
        rows.append(summary.assign(term=f, aliases=", ".join(t for t in alias.chain(f) if t != f and len(t) <= 2)))
    for a, b in itertools.combinations(FACTORS, 2):
        chain = alias.chain(a + b)
        if min(map(len, chain)) == 1 or chain in chains:
            continue
        chains.add(chain)
        deltas = interaction_contrasts(runs, a, b, [-1.0, 1.0], [-1.0, 1.0], BLOCKS, "accuracy")
        deltas["step"] = step * np.sqrt(deltas.pop("weight").astype(float) / 4)
        deltas = deltas.drop(columns=["comparison_a", "level_b", "base_b", "effect_at_base", "effect_at_level"])
        rows.append(summarize_deltas(deltas, ["trial", "dataset"]).assign(
            term=a + b, aliases=", ".join(t for t in chain if t != a + b and len(t) <= 2)))
    return decide(pd.concat(rows, ignore_index=True), ["trial", "dataset"], "holm", margin=MARGIN)


def calibration(out: pd.DataFrame) -> dict[str, float]:
    mains = out[out["term"].isin(FACTORS)]
    null = mains["term"].map(PLANTED).eq(0) | ~out["term"].isin(FACTORS)
    wrong = (null & out["verdict"].isin(["better", "worse"])) | (~null & (out["verdict"] == "worse"))
    return {"familywise_false_direction": float(wrong.groupby(out["trial"]).any().mean()),
            **{f"power_{f} ({PLANTED[f]:g} pp)": float((mains.loc[mains["term"] == f, "verdict"] == "better").mean())
               for f in FACTORS if PLANTED[f] > 0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--interaction", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    res4, res3 = DesignSpec("fractional", resolution=4), DesignSpec("fractional", resolution=3)
    part1 = {f"{n} seeds": calibration(verdicts(draw(res4, args.trials, n, 0.0, rng), res4)) for n in args.seeds}
    n = max(args.seeds)
    part2 = {}
    for name, design in (("resolution IV", res4), ("resolution III", res3)):
        out = verdicts(draw(design, args.trials, n, args.interaction, rng), design)
        mains = out[out["term"].isin(FACTORS)]
        clear = mains[~mains["aliases"].str.contains("AB") & mains["term"].map(PLANTED).eq(0)]
        part2[f"{name}: null main effects not aliased with AB"] = {
            "planted main effect": 0.0, "mean estimate": round(float(clear["mean"].mean()), 3),
            "called better/worse": float(clear["verdict"].isin(["better", "worse"]).mean()), "flagged": False}
        hit = out[out["aliases"].str.contains("AB") | (out["term"] == "AB")]
        for row_term, rows in hit.groupby("term"):
            called = rows["verdict"].isin(["better", "worse", "detected"])
            part2[f"{name}: {row_term} (aliases {rows['aliases'].iat[0]})"] = {
                "planted main effect": PLANTED.get(row_term, 0.0), "mean estimate": round(float(rows["mean"].mean()), 3),
                "called better/worse": float(called.mean()),
                "flagged": bool(called.any()) and bool(rows.loc[called, "aliases"].str.contains("AB").all()
                                                      or row_term == "AB")}
    se = np.sqrt(0.05 * 0.95 / args.trials)
    print(f"{args.trials:,} trials; 6 factors, planted {PLANTED} pp; {IMAGES} images at {ACCURACY:.0%}; margin "
          f"{MARGIN} pp; Monte-Carlo se at 0.05: {se:.4f}; {time.perf_counter() - start:.0f} s")
    print("\nPart 1: resolution IV (16 runs a seed), no interaction\n")
    print(pd.DataFrame(part1).round(4).to_markdown())
    print(f"\nPart 2: A x B interaction of {args.interaction:g} pp, {n} seeds\n")
    print(pd.DataFrame(part2).T.to_markdown())
    print(json.dumps({"calibration": part1, "aliased_interaction": part2}))


if __name__ == "__main__":
    main()
