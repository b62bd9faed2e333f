"""PyTorch's figure beside `cxr bench classifier`: torchvision's DenseNet with the same config, input
size and batch, one input channel and 14 sigmoid outputs, on this machine's CPU (all cores).
Prints one JSON line: training and inference images per second.

Usage: bench_densenet_torch.py CONFIG_JSON SIZE BATCH STEPS"""
import json
import os
import sys
import time

import torch
import torchvision


def build(config):
    model = torchvision.models.DenseNet(
        growth_rate=config["growthRate"],
        block_config=tuple(config["blockConfig"]),
        num_init_features=config["numInitFeatures"],
        bn_size=config["bnSize"],
        num_classes=config["labels"],
    )
    stem = config["stem"]
    model.features.conv0 = torch.nn.Conv2d(
        config["inChannels"], config["numInitFeatures"], stem["kernel"], stem["stride"], stem["padding"], bias=False
    )
    if not stem["pool"]:
        model.features.pool0 = torch.nn.Identity()
    return model


def main(config_json, size, batch, steps):
    size, batch, steps = int(size), int(batch), int(steps)
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = build(json.loads(config_json)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    images = torch.rand(batch, 1, size, size) * 2 - 1
    targets = (torch.rand(batch, 14) > 0.8).float()

    def train_step():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    train_step()
    started = time.perf_counter()
    for _ in range(steps):
        train_step()
    train_seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        torch.sigmoid(model(images))
        started = time.perf_counter()
        for _ in range(steps):
            torch.sigmoid(model(images))
        inference_seconds = time.perf_counter() - started
    print(json.dumps({
        "train_images_per_second": batch * steps / train_seconds,
        "inference_images_per_second": batch * steps / inference_seconds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:5])
