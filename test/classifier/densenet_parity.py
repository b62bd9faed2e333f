"""torchvision's DenseNet on the weights and input our test wrote: one training-mode step.

Usage: densenet_parity.py WEIGHTS INPUTS OUTPUT. WEIGHTS is our safetensors checkpoint with the
network's config in its metadata; INPUTS holds `images` and `targets`. Writes, computed in float64:
the logits, the BCE-with-logits loss, every parameter's gradient (grad.<name>) and every batch-norm
running statistic after the step (state.<name>); the same computed in float32 under the prefix
"f32." (how well-conditioned each value is); and min_abs_relu_input, the smallest |input| of any
ReLU (every ReLU follows a batch norm), so the test can tell a kink tie from a disagreement."""
import copy
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "packages", "kernels", "python"))

import numpy as np  # noqa: E402
import cxr_safetensors  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402


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
    if config["compression"] != 0.5:
        raise SystemExit("torchvision's DenseNet halves the channels at each transition (compression 0.5)")
    return model


def main(weights_path, inputs_path, output_path):
    weights, metadata = cxr_safetensors.read(weights_path)
    inputs, _ = cxr_safetensors.read(inputs_path)
    model = build(json.loads(metadata["config"]))
    state = {name: torch.from_numpy(np.array(value, dtype=np.float32)) for name, value in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if not name.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"names differ from torchvision: missing {missing}, unexpected {unexpected}")
    result = {}
    for prefix, dtype in (("", torch.float64), ("f32.", torch.float32)):
        step = copy.deepcopy(model).to(dtype).train()
        smallest = []
        for module in step.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.register_forward_hook(lambda _m, _i, output: smallest.append(output.detach().abs().min()))
        logits = step(torch.from_numpy(inputs["images"]).to(dtype))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(inputs["targets"]).to(dtype))
        loss.backward()
        result[f"{prefix}logits"] = logits.detach().double().numpy()
        result[f"{prefix}loss"] = loss.detach().double().numpy().reshape(1)
        for name, parameter in step.named_parameters():
            result[f"{prefix}grad.{name}"] = parameter.grad.double().numpy()
        for name, buffer in step.named_buffers():
            if not name.endswith("num_batches_tracked"):
                result[f"{prefix}state.{name}"] = buffer.double().numpy()
        if prefix == "":
            result["min_abs_relu_input"] = torch.stack(smallest).min().double().numpy().reshape(1)
    cxr_safetensors.write(output_path, result)


if __name__ == "__main__":
    main(*sys.argv[1:4])
