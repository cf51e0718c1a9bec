"""PyTorch twins of `msh bench train`'s models: training samples/s on the CPU.

Prints one JSON line per model, the same fields as `msh bench train --json`.
Usage: python3 bench/torch_train.py [--threads N] [--samples 2048] [--batch-size 64] [--repeats 3]
"""
import argparse
import json
import sys
import time

try:
    import torch
    from torch import nn
except ImportError:
    print("torch is not installed (pip install torch); skipping the PyTorch baseline", file=sys.stderr)
    sys.exit(3)


def mnist1d_cnn():
    # workflows/archs/mnist1d_cnn.yaml: same-padded convs, then the dense-10 task head.
    return nn.Sequential(
        nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(),
        nn.Conv1d(32, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
        nn.Flatten(), nn.Linear(64 * 10, 128), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(128, 10),
    ), (1, 40)


def cifar_cnn():
    # workflows/archs/cifar_cnn.yaml
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
    ), (3, 32, 32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name, build in [("mnist1d_cnn", mnist1d_cnn), ("cifar_cnn", cifar_cnn)]:
        model, shape = build()
        params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        x = torch.rand((args.samples, *shape)) - 0.5
        y = torch.arange(args.samples) % 10
        rates = []
        for _ in range(1 + args.repeats):
            start = time.perf_counter()
            perm = torch.randperm(args.samples)
            model.train()
            for i in range(0, args.samples, args.batch_size):
                idx = perm[i:i + args.batch_size]
                opt.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
            rates.append(args.samples / (time.perf_counter() - start))
        timed = sorted(rates[1:])
        print(json.dumps({"model": name, "samples_per_s": timed[len(timed) // 2], "parameters": params, "runs": timed}))


if __name__ == "__main__":
    main()
