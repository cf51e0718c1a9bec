"""PyTorch twins of `msh bench train`'s models: training samples/s on the CPU.

Prints one JSON line per model, the same fields as `msh bench train --json`.
Usage: python3 bench/torch_train.py [--threads N] [--device cpu|cuda] [--samples 2048] [--batch-size 64] [--repeats 3]
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


class Residual(nn.Module):
    # core-blocks' `resnet` block: conv-bn-relu-conv-bn, added to the input, then relu.
    def __init__(self, channels):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv1d(channels, channels, 3, padding=1), nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1), nn.BatchNorm1d(channels),
        )

    def forward(self, x):
        return torch.relu(x + self.branch(x))


def mnist1d_resnet():
    # workflows/archs/mnist1d_resnet.yaml
    return nn.Sequential(
        nn.Conv1d(1, 32, 3, padding=1), nn.BatchNorm1d(32), nn.ReLU(),
        Residual(32), Residual(32), nn.MaxPool1d(2), Residual(32),
        nn.Flatten(), nn.Linear(32 * 20, 10),
    ), (1, 40)


class ConvLstm(nn.Module):
    # workflows/archs/mnist1d_lstm.yaml: conv stem, LSTM over the 20 steps, last hidden state.
    def __init__(self):
        super().__init__()
        self.embed = nn.Sequential(nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2))
        self.lstm = nn.LSTM(32, 64, batch_first=True)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        _, (hidden, _) = self.lstm(self.embed(x).transpose(1, 2))
        return self.head(hidden[-1])


def mnist1d_lstm():
    return ConvLstm(), (1, 40)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    models = [("mnist1d_cnn", mnist1d_cnn), ("cifar_cnn", cifar_cnn), ("mnist1d_resnet", mnist1d_resnet),
              ("mnist1d_lstm", mnist1d_lstm)]
    for name, build in models:
        model, shape = build()
        model = model.to(device)
        params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        x = (torch.rand((args.samples, *shape)) - 0.5).to(device)
        y = (torch.arange(args.samples) % 10).to(device)
        rates = []
        for _ in range(1 + args.repeats):
            start = time.perf_counter()
            perm = torch.randperm(args.samples, device=device)
            model.train()
            for i in range(0, args.samples, args.batch_size):
                idx = perm[i:i + args.batch_size]
                opt.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates.append(args.samples / (time.perf_counter() - start))
        timed = sorted(rates[1:])
        print(json.dumps({"model": name, "samples_per_s": timed[len(timed) // 2], "parameters": params, "runs": timed}))


if __name__ == "__main__":
    main()
