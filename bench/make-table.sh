#!/usr/bin/env bash
# Trains every architecture of bench/mnist1d-table.yaml once and writes the metrics table
# that `msh bench searchers` runs on (bench/mnist1d-table.csv).
#   bash bench/make-table.sh [MSH]
set -euo pipefail
cd "$(dirname "$0")/.."
msh="${1:-target/release/msh}"
run="$(mktemp -d)/run"
"$msh" run bench/mnist1d-table.yaml --run-dir "$run"
"$msh" trials "$run" --table > bench/mnist1d-table.csv
echo "wrote bench/mnist1d-table.csv ($(($(wc -l < bench/mnist1d-table.csv) - 1)) architectures)"
