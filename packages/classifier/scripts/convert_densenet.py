"""Converts a published DenseNet checkpoint to the safetensors file `cxr` loads by name.

    /usr/bin/python3 convert_densenet.py INPUT.pt OUTPUT.safetensors [--sum-rgb] [--drop-classifier]

INPUT is anything torch.load returns for a torchvision-layout DenseNet: a state dict (torchvision's
ImageNet weights, including their pre-0.2 names such as `denselayer1.norm.1.weight`), a dict with a
"state_dict"/"model" entry, or a whole pickled model (torchxrayvision distributes those; its module
must then be importable). `num_batches_tracked` counters are dropped and legacy names rewritten.
--sum-rgb turns a 3-channel conv0 into the 1-channel one radiographs need (sums over colour
channels, the usual way to reuse ImageNet weights on grey images). --drop-classifier leaves the
classifier out (e.g. ImageNet's 1000 classes): load with `allowMissingClassifier` then.
Needs torch only to unpickle; the output is written as float32 with packages/kernels/python/cxr_safetensors.py (json + numpy).
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "kernels", "python"))

import cxr_safetensors  # noqa: E402

LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def state_dict_of(loaded):
    if hasattr(loaded, "state_dict"):
        return loaded.state_dict()
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if key in loaded and isinstance(loaded[key], dict):
                return loaded[key]
        return loaded
    raise SystemExit(f"cannot find a state dict in a {type(loaded).__name__}")


def convert(state, sum_rgb=False, drop_classifier=False):
    tensors = {}
    for name, value in state.items():
        if name.startswith("module."):
            name = name[len("module."):]
        if name.endswith("num_batches_tracked"):
            continue
        if drop_classifier and name.startswith("classifier."):
            continue
        legacy = LEGACY.match(name)
        if legacy:
            name = legacy.group(1) + legacy.group(2)
        array = value.detach().cpu().float().numpy()
        if name == "features.conv0.weight" and sum_rgb:
            if array.shape[1] != 3:
                raise SystemExit(f"--sum-rgb: conv0 has {array.shape[1]} input channels, not 3")
            array = array.sum(axis=1, keepdims=True)
        tensors[name] = array
    if "features.conv0.weight" not in tensors:
        raise SystemExit("no features.conv0.weight: not a torchvision-layout DenseNet")
    return tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--sum-rgb", action="store_true")
    parser.add_argument("--drop-classifier", action="store_true")
    args = parser.parse_args()
    import torch

    loaded = torch.load(args.input, map_location="cpu")
    tensors = convert(state_dict_of(loaded), args.sum_rgb, args.drop_classifier)
    cxr_safetensors.write(args.output, tensors, {"format": "pt", "source": os.path.basename(args.input)})
    print(f"wrote {len(tensors)} tensors to {args.output}")


if __name__ == "__main__":
    main()
