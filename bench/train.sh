#!/usr/bin/env bash
# Training throughput of msh (burn Flex, CPU) against PyTorch on the CPU with the same
# thread count: median samples/s of each, and the ratio msh / PyTorch.
# Usage: bench/train.sh [ROUNDS]   (needs a release build: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
threads="${THREADS:-$(nproc)}"
msh="${MSH:-target/release/msh}"
[ -x "$msh" ] || { echo "build first: cargo build --release" >&2; exit 1; }
export RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for i in $(seq "$rounds"); do
  "$msh" bench train --json >> "$tmp/msh.jsonl"
  if python3 bench/torch_train.py --threads "$threads" >> "$tmp/torch.jsonl" 2> "$tmp/torch.err"; then :; else
    cat "$tmp/torch.err" >&2; rm -f "$tmp/torch.jsonl"; break
  fi
done
python3 - "$tmp" "$threads" <<'PY'
import json, statistics, sys, os
tmp, threads = sys.argv[1], sys.argv[2]
def load(name):
    path = os.path.join(tmp, name)
    rows = {}
    if os.path.exists(path):
        for line in open(path):
            r = json.loads(line)
            rows.setdefault(r["model"], []).append(r["samples_per_s"])
    return rows
msh, torch = load("msh.jsonl"), load("torch.jsonl")
print(f"threads {threads}; median samples/s over rounds")
print(f"{'model':<15} {'msh':>10} {'pytorch':>10} {'msh/pytorch':>12}")
for model, rates in msh.items():
    m = statistics.median(rates)
    if model in torch:
        t = statistics.median(torch[model])
        print(f"{model:<15} {m:>10.0f} {t:>10.0f} {m / t:>12.2f}")
    else:
        print(f"{model:<15} {m:>10.0f} {'skipped':>10} {'-':>12}")
PY
