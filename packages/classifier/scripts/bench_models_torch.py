"""PyTorch's figures beside `cxr bench kernels --models` (the classifier's cases): the same step with
the same shapes and config on this machine's CPU. Prints one JSON line: seconds_per_step (median of
the timed steps), threads, torch.

  bench_models_torch.py small-cnn --batch 32 --size 64 --widths 16,32,64,64 --labels 14 \
      --lr 3e-3 --weight-decay 1e-4 --max-grad-norm 1 [--steps 3 --warmup 1 --threads N]
    The quickstart's training step: SmallCnn (stride-2 Conv3x3(no bias)-BatchNorm-ReLU stages,
    global average pooling, Linear head), BCE with logits averaged over the unmasked labels,
    clip_grad_norm_, AdamW.
  bench_models_torch.py dense-block --batch 2 --size 56 --layers 6 --in-channels 64 --growth 32 \
      --bn-size 4 [--steps 3 --warmup 1 --threads N]
    torchvision's own _DenseBlock (the one inside densenet121) in training mode: forward, then
    backward from a fixed output gradient.
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision.models.densenet as tv_densenet


def small_cnn(widths, labels):
    layers, channels = [], 1
    for width in widths:
        layers += [
            torch.nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
            torch.nn.BatchNorm2d(width),
            torch.nn.ReLU(),
        ]
        channels = width
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(channels, labels)]
    return torch.nn.Sequential(*layers)


def small_cnn_step(args):
    widths = [int(w) for w in args.widths.split(",")]
    model = small_cnn(widths, args.labels).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    images = torch.rand(args.batch, 1, args.size, args.size) * 2 - 1
    labels = (torch.rand(args.batch, args.labels) > 0.8).float()
    mask = (torch.rand(args.batch, args.labels) > 0.1).float()

    def step():
        per_label = F.binary_cross_entropy_with_logits(model(images), labels, reduction="none")
        loss = (per_label * mask).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def dense_block_step(args):
    block = tv_densenet._DenseBlock(
        num_layers=args.layers,
        num_input_features=args.in_channels,
        bn_size=args.bn_size,
        growth_rate=args.growth,
        drop_rate=0,
    ).train()
    x = torch.rand(args.batch, args.in_channels, args.size, args.size) * 2 - 1
    out_channels = args.in_channels + args.layers * args.growth
    grad_output = torch.rand(args.batch, out_channels, args.size, args.size) * 2 - 1

    def step():
        block(x).backward(grad_output)
        block.zero_grad(set_to_none=True)

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    cnn = commands.add_parser("small-cnn")
    cnn.add_argument("--widths", required=True)
    cnn.add_argument("--labels", type=int, required=True)
    cnn.add_argument("--lr", type=float, required=True)
    cnn.add_argument("--weight-decay", type=float, required=True)
    cnn.add_argument("--max-grad-norm", type=float, required=True)
    block = commands.add_parser("dense-block")
    block.add_argument("--layers", type=int, required=True)
    block.add_argument("--in-channels", type=int, required=True)
    block.add_argument("--growth", type=int, required=True)
    block.add_argument("--bn-size", type=int, required=True)
    for sub in (cnn, block):
        sub.add_argument("--batch", type=int, required=True)
        sub.add_argument("--size", type=int, required=True)
        sub.add_argument("--steps", type=int, default=3)
        sub.add_argument("--warmup", type=int, default=1)
        sub.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    step = small_cnn_step(args) if args.command == "small-cnn" else dense_block_step(args)
    for _ in range(args.warmup):
        step()
    durations = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        durations.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "command": args.command,
                "seconds_per_step": statistics.median(durations),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
