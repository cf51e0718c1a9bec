#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: say which GPU backends work (wgpu on NVIDIA's Vulkan
# driver), measure the reference models' training samples/s against the machine's PyTorch
# on CUDA, and time a short CIFAR-shaped search. Every step has a time limit (under 8
# minutes in all); a missing backend is reported, not waited on. Offline: nothing is
# downloaded or compiled when MSH names a prebuilt binary, e.g. one built here with
#   cargo build --profile dist && xz -T0 -9 -k target/dist/msh     # about 30 MiB, carried over
# and run there as
#   unxz msh.xz && chmod +x msh && MSH=./msh bench/gpu.sh
# Without MSH it builds the release binary first (cargo, network for the crates).
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp -d); trap 'rm -rf "$log"' EXIT
step() { echo; echo "== $*"; }

step "machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [ -n "${MSH:-}" ]; then
  msh="$MSH"
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/msh/target}"
  msh="$CARGO_TARGET_DIR/release/msh"
  rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
  timeout 1500 cargo build --release --locked -p msh || { echo "gpu.sh: msh did not build" >&2; exit 1; }
fi
"$msh" --version || { echo "gpu.sh: $msh does not run here" >&2; exit 1; }

step "backends"
working=()
for backend in wgpu; do
  if out=$(timeout 90 "$msh" bench train --backend "$backend" --samples 256 --repeats 1 2>&1); then
    echo "$backend: works ($(echo "$out" | head -1))"
    working+=("$backend")
  else
    echo "$backend: unavailable: $(echo "$out" | grep -v '^$' | tail -1)"
  fi
done
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  echo "pytorch: CUDA available"
else
  echo "pytorch: no CUDA (pip install torch to compare)"
fi
[ ${#working[@]} -gt 0 ] || { echo "gpu.sh: no GPU backend works here" >&2; exit 1; }

step "training samples/s: msh on the GPU against PyTorch on CUDA"
for backend in "${working[@]}"; do
  timeout 90 "$msh" bench train --backend "$backend" --samples 8192 --batch-size 256 --json \
    | sed "s/^/msh $backend: /" || echo "msh $backend: timed out or failed"
done
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  timeout 90 python3 bench/torch_train.py --device cuda --samples 8192 --batch-size 256 | sed 's/^/pytorch cuda: /' \
    || echo "pytorch cuda: timed out or failed"
else
  echo "pytorch cuda: skipped (pip install torch with CUDA to compare)"
fi

step "a short CIFAR-shaped search (random data of shape [3, 32, 32], 6 trials of 2 epochs)"
python3 - "$log/cifar.csv" <<'PY'
import random, sys
random.seed(0)
with open(sys.argv[1], "w") as f:
    f.write(",".join([f"p{i}" for i in range(3072)] + ["label"]) + "\n")
    for n in range(2000):
        f.write(",".join(f"{random.random():.3f}" for _ in range(3072)) + f",{n % 10}\n")
PY
cat > "$log/cifar.yaml" <<YAML
name: gpu-cifar-shaped
seed: 1
data: {source: 'csv:$log/cifar.csv', shape: [3, 32, 32]}
space: {blocks: [conv, resnet, max_pool], min_depth: 2, max_depth: 4}
training: {epochs: 2, batch_size: 128}
budget: {trials: 6}
stages: {search: {kind: search}}
YAML
start=$(date +%s)
if timeout 150 "$msh" run "$log/cifar.yaml" --run-dir "$log/run" --backend "${working[-1]}" > "$log/run.out" 2>&1; then
  echo "search on ${working[-1]}: 6 trials in $(( $(date +%s) - start )) s"
  "$msh" trials "$log/run" | head -8
else
  tail -5 "$log/run.out"; echo "gpu.sh: the search failed or ran past 150 s" >&2; exit 1
fi
