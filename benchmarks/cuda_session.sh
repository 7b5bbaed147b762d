#!/usr/bin/env bash
# The checks and measurements a GPU session makes, in one go (GPU time is short and a machine's
# start is paid once): first the CUDA path's correctness, then the GPU benchmarks.
#
#   OUT=folder bash benchmarks/cuda_session.sh      (PYTHON: the interpreter, default python3)
#
# Part 1, all at once (they check numbers, not speed): the training and pack tests on CUDA
# (bit-for-bit repeat and resume, float64 packs equal to their members, bf16 and fp16 packs), and
# the quickstart grid through the CLI five ways (the default bf16 + channels_last, --fp32,
# --pack auto, --runs-per-gpu 4, and --compile on two cells), whose test accuracies are then set beside the
# committed CPU runs of the same run ids. Part 2, one at a time: benchmarks/packed.py,
# train_loop.py and stacked_seeds.py on CUDA. Part 3, while time lasts: the whole suite, module by
# module (at most 90 s each, so a slow module costs only itself), with one line per failure: no
# test may assume that there is no GPU. $OUT gets SUMMARY.txt (the digest), the bf16 run's
# REPORT.md, and session.tgz (every log and the CUDA runs' records).
set -u
OUT=${OUT:-cuda-session}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
mkdir "$WORK/logs"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TQDM_DISABLE=1
ablatrix=("$PY" -c 'import sys; from ablatrix.cli import main; sys.exit(main(sys.argv[1:]))')
timed() {  # timed NAME SECONDS COMMAND...: the command's output in logs/NAME.txt, its time and status in SUMMARY
    local name=$1 limit=$2 start=$SECONDS; shift 2
    timeout "$limit" "$@" > "$WORK/logs/$name.txt" 2>&1
    echo "$name: exit $? in $((SECONDS - start)) s" >> "$OUT/SUMMARY.txt"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__,
            torch.cuda.get_device_name(), "bf16" if torch.cuda.is_bf16_supported() else "no bf16")'
  nproc; } > "$OUT/SUMMARY.txt" 2>&1

grid=ablations/quickstart.toml
timed pytest-cuda 170 "$PY" -m pytest -q -p no:cacheprovider -k cuda tests/test_train.py tests/test_packed.py &
timed cli-bf16 170 "${ablatrix[@]}" run $grid --results "$WORK/bf16" --device cuda &
timed cli-fp32 170 "${ablatrix[@]}" run $grid --results "$WORK/fp32" --device cuda --fp32 &
timed cli-pack-auto 170 "${ablatrix[@]}" run $grid --results "$WORK/pack" --device cuda --pack auto &
timed cli-runs-per-gpu-4 170 "${ablatrix[@]}" run $grid --results "$WORK/rpg" --device cuda --runs-per-gpu 4 &
timed cli-compile 170 "${ablatrix[@]}" run $grid --results "$WORK/compile" --device cuda --compile --set 'seeds=[0]' --set 'axes.model.conv=[[16]]' --set 'axes.model.dropout=[0.3]' &
wait
timed report-bf16 40 "${ablatrix[@]}" report $grid --results "$WORK/bf16"
cp "$WORK/bf16/quickstart/REPORT.md" "$OUT/REPORT-bf16.md" 2>/dev/null
"$PY" - "$WORK" >> "$OUT/SUMMARY.txt" 2>&1 <<'EOF'
"""Test accuracy (%) per run id: the committed CPU runs beside each CUDA way; and each way's device."""
import json, sys
from pathlib import Path
ways = {"cpu (committed)": Path("results/quickstart/runs")}
ways.update({w: Path(sys.argv[1], w, "quickstart", "runs") for w in ("bf16", "fp32", "pack", "rpg", "compile")})
acc, about = {}, {}
for way, folder in ways.items():
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        r = json.loads(f.read_text())
        acc.setdefault(f.stem, {})[way] = round(100 * r["test"]["accuracy"], 2) if r.get("test") else r.get("status")
        about[way] = {k: r.get(k) for k in ("device", "device_name", "execution", "versions")}
print("\n" + " | ".join(["run id", *ways]))
for rid, row in acc.items():
    print(" | ".join([rid, *(str(row.get(w, "-")) for w in ways)]))
for way, a in about.items():
    print(way, json.dumps(a))
EOF
tail -n 3 "$WORK/logs/pytest-cuda.txt" >> "$OUT/SUMMARY.txt"

timed bench-packed 130 "$PY" benchmarks/packed.py --device cuda --cells 32 --packs 2,4,8,16,32 --processes 4
timed bench-train-loop 60 "$PY" benchmarks/train_loop.py --device cuda --repeats 2
timed bench-stacked-seeds 40 "$PY" benchmarks/stacked_seeds.py --device cuda
for b in packed train-loop stacked-seeds; do echo "== $b"; tail -n 12 "$WORK/logs/bench-$b.txt"; done >> "$OUT/SUMMARY.txt"
echo "== the suite, module by module (SUITE_SECONDS=${SUITE_SECONDS:=240} in all)" >> "$OUT/SUMMARY.txt"
suite_end=$((SECONDS + SUITE_SECONDS))
for module in tests/test_*.py; do
    [ $SECONDS -lt $suite_end ] || { echo "not reached: $module" >> "$OUT/SUMMARY.txt"; continue; }
    name=$(basename "$module" .py)
    timed "$name" 90 "$PY" -m pytest -q -p no:cacheprovider --tb=line "$module"
    grep -E "^(FAILED|ERROR)|^/.*Error|passed|failed" "$WORK/logs/$name.txt" | tail -n 8 >> "$OUT/SUMMARY.txt"
done
tar -czf "$OUT/session.tgz" -C "$WORK" --exclude '*.pt' --exclude weights . 2>/dev/null
cat "$OUT/SUMMARY.txt"
