#!/usr/bin/python3
"""PyTorch twin of @cxr/diffusion's text encoder and UNet, for parity tests and speed comparison.

Plain torch (Debian's python3-torch 1.13; no diffusers, transformers or safetensors needed): the CLIP
text model (transformers' CLIPTextModel) and diffusers' UNet2DConditionModel are written here as
functions over a dict of named parameters, from the same config.json our DiffusionModel.save writes.
The parameter names and shapes are derived from the configuration independently of the TypeScript
code and checked against the checkpoint, so a layout mistake on either side fails loudly.

Parity (used by test/diffusion/parity.test.ts):
  torch_reference.py parity --model DIR --inputs IN.safetensors --out OUT.safetensors
    DIR: config.json, text_encoder/model.safetensors, unet/diffusion_pytorch_model.safetensors
    IN:  ids [B, L] (token ids stored as F32), sample [B, C, H, W], timesteps [B], grad_output [B, C, H, W]
    OUT: text_hidden [B, L, D], unet_output [B, C, H, W], and for every parameter
         "grad.text_encoder.<name>" / "grad.unet.<name>": the gradient of sum(unet_output * grad_output)
         (in float64 with --float64, else float32)

Layout and size:
  torch_reference.py count --config CONFIG.json [--model DIR]
    Prints {"config", "text_encoder", "unet", "total", "tensors"}: parameter counts of the layout derived
    from the configuration; with --model, first checks that DIR's weights have exactly that layout.

One UNet block's speed (used by `cxr bench kernels --models`):
  torch_reference.py block --channels 128 --size 32 --heads 2 --temb 512 --groups 32 --eps 1e-5
      --context-length 77 --context-dim 1024 --linear-projection 1 --layers 1 --batch 2
      [--steps 3] [--warmup 1] [--threads N] [--seed S]
    ResnetBlock2D then Transformer2DModel (self- and cross-attention to a random text context), random
    weights; forward, then backward from a random output gradient. Prints one JSON line:
    {"command", "seconds_per_step" (median), "threads", "torch", "parameters"}.

Speed (used by `cxr bench diffusion`):
  torch_reference.py bench --config CONFIG.json [--batch 8] [--steps 5] [--warmup 1] [--threads N] [--seed S]
    CONFIG.json: a DiffusionModelConfig (or a model directory's config.json). Random weights, random
    prompts and images; one training step = text encoder + UNet forward, MSE to the noise, backward,
    AdamW step. Prints one JSON line: {"config", "batch", "steps", "seconds_per_step" (median),
    "seconds" (all steps), "threads", "torch", "parameters"}.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

TRANSFORMER_NORM_EPS = 1e-6

# ---------------------------------------------------------------------------------------------------
# safetensors: the project's one Python reader/writer, packages/kernels/python/cxr_safetensors.py

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "kernels", "python"))
import cxr_safetensors  # noqa: E402


class CheckpointError(Exception):
    pass


def read_tensors(path):
    """The tensors of a safetensors file (name -> numpy array), without its metadata."""
    return cxr_safetensors.read(path)[0]


# ---------------------------------------------------------------------------------------------------
# Parameter names and shapes from the configuration (CLIPTextModel, UNet2DConditionModel)


def heads_per_level(unet):
    heads = unet["attentionHeadDim"]
    levels = len(unet["blockOutChannels"])
    return [heads] * levels if isinstance(heads, int) else list(heads)


def text_encoder_shapes(text):
    hidden, inter = text["hiddenSize"], text["intermediateSize"]
    shapes = OrderedDict()
    shapes["text_model.embeddings.token_embedding.weight"] = (text["vocabSize"], hidden)
    shapes["text_model.embeddings.position_embedding.weight"] = (text["maxPositions"], hidden)
    for layer in range(text["numLayers"]):
        prefix = f"text_model.encoder.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{prefix}.self_attn.{proj}.weight"] = (hidden, hidden)
            shapes[f"{prefix}.self_attn.{proj}.bias"] = (hidden,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{prefix}.{norm}.weight"] = (hidden,)
            shapes[f"{prefix}.{norm}.bias"] = (hidden,)
        shapes[f"{prefix}.mlp.fc1.weight"] = (inter, hidden)
        shapes[f"{prefix}.mlp.fc1.bias"] = (inter,)
        shapes[f"{prefix}.mlp.fc2.weight"] = (hidden, inter)
        shapes[f"{prefix}.mlp.fc2.bias"] = (hidden,)
    shapes["text_model.final_layer_norm.weight"] = (hidden,)
    shapes["text_model.final_layer_norm.bias"] = (hidden,)
    return shapes


def _conv_shapes(shapes, name, cin, cout, k):
    shapes[f"{name}.weight"] = (cout, cin, k, k)
    shapes[f"{name}.bias"] = (cout,)


def _linear_shapes(shapes, name, cin, cout, bias=True):
    shapes[f"{name}.weight"] = (cout, cin)
    if bias:
        shapes[f"{name}.bias"] = (cout,)


def _norm_shapes(shapes, name, channels):
    shapes[f"{name}.weight"] = (channels,)
    shapes[f"{name}.bias"] = (channels,)


def resnet_shapes(shapes, name, cin, cout, temb):
    """Adds a ResnetBlock2D's parameters to `shapes`."""
    _norm_shapes(shapes, f"{name}.norm1", cin)
    _conv_shapes(shapes, f"{name}.conv1", cin, cout, 3)
    _linear_shapes(shapes, f"{name}.time_emb_proj", temb, cout)
    _norm_shapes(shapes, f"{name}.norm2", cout)
    _conv_shapes(shapes, f"{name}.conv2", cout, cout, 3)
    if cin != cout:
        _conv_shapes(shapes, f"{name}.conv_shortcut", cin, cout, 1)


def transformer_shapes(shapes, name, channels, heads, unet):
    """Adds a Transformer2DModel's parameters to `shapes`."""
    inner = heads * (channels // heads)
    _norm_shapes(shapes, f"{name}.norm", channels)
    if unet["useLinearProjection"]:
        _linear_shapes(shapes, f"{name}.proj_in", channels, inner)
    else:
        _conv_shapes(shapes, f"{name}.proj_in", channels, inner, 1)
    for k in range(unet["transformerLayersPerBlock"]):
        block = f"{name}.transformer_blocks.{k}"
        for attn, context in (("attn1", inner), ("attn2", unet["crossAttentionDim"])):
            _linear_shapes(shapes, f"{block}.{attn}.to_q", inner, inner, bias=False)
            _linear_shapes(shapes, f"{block}.{attn}.to_k", context, inner, bias=False)
            _linear_shapes(shapes, f"{block}.{attn}.to_v", context, inner, bias=False)
            _linear_shapes(shapes, f"{block}.{attn}.to_out.0", inner, inner)
        for n in ("norm1", "norm2", "norm3"):
            _norm_shapes(shapes, f"{block}.{n}", inner)
        _linear_shapes(shapes, f"{block}.ff.net.0.proj", inner, 8 * inner)
        _linear_shapes(shapes, f"{block}.ff.net.2", 4 * inner, inner)
    if unet["useLinearProjection"]:
        _linear_shapes(shapes, f"{name}.proj_out", inner, channels)
    else:
        _conv_shapes(shapes, f"{name}.proj_out", inner, channels, 1)


def unet_shapes(unet):
    shapes = OrderedDict()

    def conv(name, cin, cout, k):
        _conv_shapes(shapes, name, cin, cout, k)

    def linear(name, cin, cout, bias=True):
        _linear_shapes(shapes, name, cin, cout, bias)

    def norm(name, channels):
        _norm_shapes(shapes, name, channels)

    def resnet(name, cin, cout, temb):
        resnet_shapes(shapes, name, cin, cout, temb)

    def transformer(name, channels, heads):
        transformer_shapes(shapes, name, channels, heads, unet)

    channels = unet["blockOutChannels"]
    levels = len(channels)
    heads = heads_per_level(unet)
    temb = 4 * channels[0]
    conv("conv_in", unet["inChannels"], channels[0], 3)
    linear("time_embedding.linear_1", channels[0], temb)
    linear("time_embedding.linear_2", temb, temb)
    output = channels[0]
    for level in range(levels):
        cin, output = output, channels[level]
        for layer in range(unet["layersPerBlock"]):
            resnet(f"down_blocks.{level}.resnets.{layer}", cin if layer == 0 else output, output, temb)
            if unet["downBlockTypes"][level] == "CrossAttnDownBlock2D":
                transformer(f"down_blocks.{level}.attentions.{layer}", output, heads[level])
        if level < levels - 1:
            conv(f"down_blocks.{level}.downsamplers.0.conv", output, output, 3)
    mid = channels[-1]
    resnet("mid_block.resnets.0", mid, mid, temb)
    transformer("mid_block.attentions.0", mid, heads[-1])
    resnet("mid_block.resnets.1", mid, mid, temb)
    reversed_channels = list(reversed(channels))
    reversed_heads = list(reversed(heads))
    output = reversed_channels[0]
    for index in range(levels):
        previous, output = output, reversed_channels[index]
        cin = reversed_channels[min(index + 1, levels - 1)]
        layers = unet["layersPerBlock"] + 1
        for layer in range(layers):
            skip = cin if layer == layers - 1 else output
            first = previous if layer == 0 else output
            resnet(f"up_blocks.{index}.resnets.{layer}", first + skip, output, temb)
            if unet["upBlockTypes"][index] == "CrossAttnUpBlock2D":
                transformer(f"up_blocks.{index}.attentions.{layer}", output, reversed_heads[index])
        if index < levels - 1:
            conv(f"up_blocks.{index}.upsamplers.0.conv", output, output, 3)
    norm("conv_norm_out", channels[0])
    conv("conv_out", channels[0], unet["outChannels"], 3)
    return shapes


# ---------------------------------------------------------------------------------------------------
# Forward passes over a parameter dict P


def linear(P, name, x):
    return F.linear(x, P[f"{name}.weight"], P.get(f"{name}.bias"))


def conv(P, name, x, stride=1, padding=0):
    return F.conv2d(x, P[f"{name}.weight"], P.get(f"{name}.bias"), stride=stride, padding=padding)


def layer_norm(P, name, x, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), P[f"{name}.weight"], P[f"{name}.bias"], eps)


def group_norm(P, name, x, groups, eps):
    return F.group_norm(x, groups, P[f"{name}.weight"], P[f"{name}.bias"], eps)


def split_heads(x, heads):
    batch, length, inner = x.shape
    return x.reshape(batch, length, heads, inner // heads).transpose(1, 2)


def merge_heads(x):
    batch, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * dim)


def scaled_attention(q, k, v, mask=None):
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def text_encoder_forward(P, text, ids):
    length = ids.shape[1]
    x = F.embedding(ids, P["text_model.embeddings.token_embedding.weight"])
    x = x + P["text_model.embeddings.position_embedding.weight"][:length]
    mask = torch.full((length, length), float("-inf"), dtype=x.dtype).triu(1)
    heads = text["numHeads"]
    for layer in range(text["numLayers"]):
        prefix = f"text_model.encoder.layers.{layer}"
        eps = text["layerNormEps"]
        h = layer_norm(P, f"{prefix}.layer_norm1", x, eps)
        q = split_heads(linear(P, f"{prefix}.self_attn.q_proj", h), heads)
        k = split_heads(linear(P, f"{prefix}.self_attn.k_proj", h), heads)
        v = split_heads(linear(P, f"{prefix}.self_attn.v_proj", h), heads)
        x = x + linear(P, f"{prefix}.self_attn.out_proj", merge_heads(scaled_attention(q, k, v, mask)))
        h = linear(P, f"{prefix}.mlp.fc1", layer_norm(P, f"{prefix}.layer_norm2", x, eps))
        h = h * torch.sigmoid(1.702 * h) if text["hiddenAct"] == "quick_gelu" else F.gelu(h)
        x = x + linear(P, f"{prefix}.mlp.fc2", h)
    return layer_norm(P, "text_model.final_layer_norm", x, text["layerNormEps"])


def timestep_embedding(timesteps, dim, flip_sin_to_cos, downscale_freq_shift, max_period=10000):
    """diffusers' get_timestep_embedding."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32)
    exponent = exponent / (half - downscale_freq_shift)
    emb = timesteps[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


def resnet_forward(P, name, x, temb, unet):
    groups, eps = unet["normNumGroups"], unet["normEps"]
    h = conv(P, f"{name}.conv1", F.silu(group_norm(P, f"{name}.norm1", x, groups, eps)), padding=1)
    h = h + linear(P, f"{name}.time_emb_proj", F.silu(temb))[:, :, None, None]
    h = conv(P, f"{name}.conv2", F.silu(group_norm(P, f"{name}.norm2", h, groups, eps)), padding=1)
    if f"{name}.conv_shortcut.weight" in P:
        x = conv(P, f"{name}.conv_shortcut", x)
    return x + h


def attention_forward(P, name, x, context, heads):
    q = split_heads(linear(P, f"{name}.to_q", x), heads)
    k = split_heads(linear(P, f"{name}.to_k", context), heads)
    v = split_heads(linear(P, f"{name}.to_v", context), heads)
    return linear(P, f"{name}.to_out.0", merge_heads(scaled_attention(q, k, v)))


def transformer_forward(P, name, x, context, heads, unet):
    batch, channels, height, width = x.shape
    h = F.group_norm(x, unet["normNumGroups"], P[f"{name}.norm.weight"], P[f"{name}.norm.bias"], TRANSFORMER_NORM_EPS)
    if unet["useLinearProjection"]:
        h = linear(P, f"{name}.proj_in", h.permute(0, 2, 3, 1).reshape(batch, height * width, channels))
    else:
        h = conv(P, f"{name}.proj_in", h)
        h = h.permute(0, 2, 3, 1).reshape(batch, height * width, h.shape[1])
    for k in range(unet["transformerLayersPerBlock"]):
        block = f"{name}.transformer_blocks.{k}"
        n = layer_norm(P, f"{block}.norm1", h)
        h = attention_forward(P, f"{block}.attn1", n, n, heads) + h
        h = attention_forward(P, f"{block}.attn2", layer_norm(P, f"{block}.norm2", h), context, heads) + h
        projected = linear(P, f"{block}.ff.net.0.proj", layer_norm(P, f"{block}.norm3", h))
        hidden, gate = projected.chunk(2, dim=-1)
        h = linear(P, f"{block}.ff.net.2", hidden * F.gelu(gate)) + h
    if unet["useLinearProjection"]:
        h = linear(P, f"{name}.proj_out", h)
        h = h.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
    else:
        h = h.reshape(batch, height, width, h.shape[-1]).permute(0, 3, 1, 2)
        h = conv(P, f"{name}.proj_out", h)
    return h + x


def unet_forward(P, unet, sample, timesteps, context):
    channels = unet["blockOutChannels"]
    levels = len(channels)
    heads = heads_per_level(unet)
    t = timestep_embedding(timesteps, channels[0], unet["flipSinToCos"], unet["freqShift"]).to(sample.dtype)
    temb = linear(P, "time_embedding.linear_2", F.silu(linear(P, "time_embedding.linear_1", t)))
    h = conv(P, "conv_in", sample, padding=1)
    skips = [h]
    for level in range(levels):
        for layer in range(unet["layersPerBlock"]):
            h = resnet_forward(P, f"down_blocks.{level}.resnets.{layer}", h, temb, unet)
            if unet["downBlockTypes"][level] == "CrossAttnDownBlock2D":
                h = transformer_forward(P, f"down_blocks.{level}.attentions.{layer}", h, context, heads[level], unet)
            skips.append(h)
        if level < levels - 1:
            h = conv(P, f"down_blocks.{level}.downsamplers.0.conv", h, stride=2, padding=unet["downsamplePadding"])
            skips.append(h)
    h = resnet_forward(P, "mid_block.resnets.0", h, temb, unet)
    h = transformer_forward(P, "mid_block.attentions.0", h, context, heads[-1], unet)
    h = resnet_forward(P, "mid_block.resnets.1", h, temb, unet)
    reversed_heads = list(reversed(heads))
    for index in range(levels):
        for layer in range(unet["layersPerBlock"] + 1):
            h = torch.cat([h, skips.pop()], dim=1)
            h = resnet_forward(P, f"up_blocks.{index}.resnets.{layer}", h, temb, unet)
            if unet["upBlockTypes"][index] == "CrossAttnUpBlock2D":
                h = transformer_forward(P, f"up_blocks.{index}.attentions.{layer}", h, context, reversed_heads[index], unet)
        if index < levels - 1:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = conv(P, f"up_blocks.{index}.upsamplers.0.conv", h, padding=1)
    h = F.silu(group_norm(P, "conv_norm_out", h, unet["normNumGroups"], unet["normEps"]))
    return conv(P, "conv_out", h, padding=1)


# ---------------------------------------------------------------------------------------------------


def read_config(path):
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    with open(path) as handle:
        config = json.load(handle)
    config.pop("format", None)
    return config


def check_layout(expected, stored, where):
    problems = []
    for name, shape in expected.items():
        if name not in stored:
            problems.append(f'missing "{name}" {list(shape)}')
        elif tuple(stored[name].shape) != tuple(shape):
            problems.append(f'"{name}" is {list(stored[name].shape)}, the config gives {list(shape)}')
    for name in stored:
        if name not in expected:
            problems.append(f'unexpected "{name}" {list(stored[name].shape)}')
    if problems:
        raise CheckpointError(f"{where} does not match the layout derived from config.json:\n  " + "\n  ".join(problems))


def parity(args):
    dtype = torch.float64 if args.float64 else torch.float32
    config = read_config(args.model)
    text_file = os.path.join(args.model, "text_encoder", "model.safetensors")
    unet_file = os.path.join(args.model, "unet", "diffusion_pytorch_model.safetensors")
    text_stored = read_tensors(text_file)
    unet_stored = read_tensors(unet_file)
    check_layout(text_encoder_shapes(config["textEncoder"]), text_stored, text_file)
    check_layout(unet_shapes(config["unet"]), unet_stored, unet_file)

    def params(stored):
        return OrderedDict(
            (name, torch.tensor(np.array(array, dtype=np.float64), dtype=dtype, requires_grad=True))
            for name, array in stored.items()
        )

    text_params, unet_params = params(text_stored), params(unet_stored)
    inputs = read_tensors(args.inputs)
    ids = torch.tensor(np.array(inputs["ids"]), dtype=torch.int64)
    sample = torch.tensor(np.array(inputs["sample"], dtype=np.float64), dtype=dtype)
    timesteps = torch.tensor(np.array(inputs["timesteps"], dtype=np.float64), dtype=torch.float32)
    grad_output = torch.tensor(np.array(inputs["grad_output"], dtype=np.float64), dtype=dtype)

    hidden = text_encoder_forward(text_params, config["textEncoder"], ids)
    hidden.retain_grad()
    output = unet_forward(unet_params, config["unet"], sample, timesteps, hidden)
    (output * grad_output).sum().backward()

    result = {"text_hidden": hidden.detach().numpy(), "unet_output": output.detach().numpy()}
    result["grad.text_hidden"] = hidden.grad.numpy()
    for prefix, group in (("text_encoder", text_params), ("unet", unet_params)):
        for name, tensor in group.items():
            grad = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)
            result[f"grad.{prefix}.{name}"] = grad.numpy()
    cxr_safetensors.write(args.out, result)


def count(args):
    config = read_config(args.config)
    text = text_encoder_shapes(config["textEncoder"])
    unet = unet_shapes(config["unet"])
    if args.model:
        check_layout(text, read_tensors(os.path.join(args.model, "text_encoder", "model.safetensors")), args.model)
        check_layout(unet, read_tensors(os.path.join(args.model, "unet", "diffusion_pytorch_model.safetensors")), args.model)
    sizes = {
        "text_encoder": sum(int(np.prod(shape)) for shape in text.values()),
        "unet": sum(int(np.prod(shape)) for shape in unet.values()),
    }
    sizes["total"] = sizes["text_encoder"] + sizes["unet"]
    print(json.dumps({"config": config.get("name"), **sizes, "tensors": len(text) + len(unet)}))


def bench(args):
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = read_config(args.config)
    text, unet = config["textEncoder"], config["unet"]
    shapes = OrderedDict()
    shapes.update(("text." + k, v) for k, v in text_encoder_shapes(text).items())
    shapes.update(("unet." + k, v) for k, v in unet_shapes(unet).items())
    P = OrderedDict()
    for name, shape in shapes.items():
        if len(shape) == 1 and name.endswith(".weight"):  # normalisation scales
            P[name] = torch.ones(shape, requires_grad=True)
        elif len(shape) == 1:  # biases
            P[name] = torch.zeros(shape, requires_grad=True)
        else:
            P[name] = (torch.randn(shape) * 0.02).requires_grad_(True)
    text_P = {k[len("text."):]: v for k, v in P.items() if k.startswith("text.")}
    unet_P = {k[len("unet."):]: v for k, v in P.items() if k.startswith("unet.")}
    optimizer = torch.optim.AdamW(P.values(), lr=1e-5, weight_decay=1e-2)
    batch = args.batch
    side = unet["sampleSize"]
    durations = []
    for step in range(args.warmup + args.steps):
        ids = torch.randint(0, text["vocabSize"], (batch, text["maxPositions"]))
        x0 = torch.randn(batch, unet["inChannels"], side, side)
        noise = torch.randn_like(x0)
        timesteps = torch.randint(0, config["schedule"]["numTrainTimesteps"], (batch,)).float()
        start = time.perf_counter()
        hidden = text_encoder_forward(text_P, text, ids)
        prediction = unet_forward(unet_P, unet, x0 + noise, timesteps, hidden)
        loss = F.mse_loss(prediction, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        if step >= args.warmup:
            durations.append(elapsed)
    sampling = sample_bench(args, config, text_P, unet_P) if args.sample_images > 0 else None
    print(
        json.dumps(
            {
                "config": config.get("name"),
                "batch": batch,
                "steps": args.steps,
                "sampling": sampling,
                "seconds_per_step": statistics.median(durations),
                "seconds": sum(durations),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "parameters": sum(int(np.prod(shape)) for shape in shapes.values()),
            }
        )
    )


def alphas_cumprod_of(schedule):
    """The config's beta schedule (linear, scaled_linear or squaredcos_cap_v2) as cumulative alphas."""
    count, kind = schedule["numTrainTimesteps"], schedule["betaSchedule"]
    if kind == "linear":
        betas = torch.linspace(schedule["betaStart"], schedule["betaEnd"], count, dtype=torch.float64)
    elif kind == "scaled_linear":
        betas = torch.linspace(schedule["betaStart"] ** 0.5, schedule["betaEnd"] ** 0.5, count, dtype=torch.float64) ** 2
    elif kind == "squaredcos_cap_v2":
        bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - bar((i + 1) / count) / bar(i / count), 0.999) for i in range(count)], dtype=torch.float64)
    else:
        raise SystemExit(f"unknown beta schedule {kind}")
    return torch.cumprod(1 - betas, 0)


def sample_bench(args, config, text_P, unet_P):
    """Times generation as our pipeline runs it: the text encoder on [unconditional; conditional]
    prompts once, then per step one UNet call on the doubled batch, classifier-free guidance and a
    deterministic DDIM update (eta 0, evenly spaced timesteps; the spacing does not change the cost). Median of --sample-repeats runs after one
    warm-up run."""
    text, unet = config["textEncoder"], config["unet"]
    n, steps, guidance = args.sample_images, args.sample_steps, 3.0
    side, channels = unet["sampleSize"], unet["inChannels"]
    alphas = alphas_cumprod_of(config["schedule"]).float()
    stride = config["schedule"]["numTrainTimesteps"] // steps
    timesteps = [i * stride for i in range(steps)][::-1]
    ids = torch.randint(0, text["vocabSize"], (2 * n, text["maxPositions"]))

    def run():
        with torch.no_grad():
            hidden = text_encoder_forward(text_P, text, ids)
            x = torch.randn(n, channels, side, side)
            for index, t in enumerate(timesteps):
                both = unet_forward(unet_P, unet, torch.cat([x, x]), torch.full((2 * n,), float(t)), hidden)
                uncond, cond = both.chunk(2)
                eps = uncond + guidance * (cond - uncond)
                a_t = alphas[t]
                a_prev = alphas[timesteps[index + 1]] if index + 1 < len(timesteps) else torch.tensor(1.0)
                x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
                x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps

    run()
    durations = []
    for _ in range(args.sample_repeats):
        start = time.perf_counter()
        run()
        durations.append(time.perf_counter() - start)
    seconds = statistics.median(durations)
    return {"images": n, "steps": steps, "seconds": seconds, "images_per_second": n / seconds}


def block_bench(args):
    """One UNet block (ResnetBlock2D then Transformer2DModel) forward and backward, random weights."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    unet = {
        "normNumGroups": args.groups,
        "normEps": args.eps,
        "useLinearProjection": bool(args.linear_projection),
        "transformerLayersPerBlock": args.layers,
        "crossAttentionDim": args.context_dim,
    }
    shapes = OrderedDict()
    resnet_shapes(shapes, "resnet", args.channels, args.channels, args.temb)
    transformer_shapes(shapes, "transformer", args.channels, args.heads, unet)
    P = OrderedDict()
    for name, shape in shapes.items():
        if len(shape) == 1 and name.endswith(".weight"):
            P[name] = torch.ones(shape, requires_grad=True)
        elif len(shape) == 1:
            P[name] = torch.zeros(shape, requires_grad=True)
        else:
            P[name] = (torch.randn(shape) * 0.02).requires_grad_(True)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    temb = torch.randn(args.batch, args.temb)
    context = torch.randn(args.batch, args.context_length, args.context_dim)
    grad_output = torch.randn_like(x)
    durations = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        h = resnet_forward(P, "resnet", x, temb, unet)
        h = transformer_forward(P, "transformer", h, context, args.heads, unet)
        h.backward(grad_output)
        for value in P.values():
            value.grad = None
        if step >= args.warmup:
            durations.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "command": "block",
                "seconds_per_step": statistics.median(durations),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "parameters": sum(int(np.prod(shape)) for shape in shapes.values()),
            }
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("parity", help="forward and backward on saved weights and inputs")
    p.add_argument("--model", required=True)
    p.add_argument("--inputs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--float64", action="store_true", help="compute in float64 (default float32)")
    c = commands.add_parser("count", help="parameter counts of a configuration (and a layout check of --model)")
    c.add_argument("--config", required=True, help="config.json (or a model directory)")
    c.add_argument("--model", help="a model directory whose weights must have exactly this layout")
    b = commands.add_parser("bench", help="time a training step of a configuration")
    b.add_argument("--config", required=True, help="config.json (or a model directory)")
    b.add_argument("--batch", type=int, default=8)
    b.add_argument("--steps", type=int, default=5)
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (default: torch's own choice, which honours OMP_NUM_THREADS); on a loaded machine "
        "OpenMP's spinning threads can be 10x slower than one thread",
    )
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--sample-images", type=int, default=0, help="also time generating this many images (0: skip)")
    b.add_argument("--sample-steps", type=int, default=10)
    b.add_argument("--sample-repeats", type=int, default=1)
    k = commands.add_parser("block", help="time a UNet block (ResnetBlock2D + Transformer2DModel) forward+backward")
    for flag, kind in (
        ("--channels", int),
        ("--size", int),
        ("--heads", int),
        ("--temb", int),
        ("--groups", int),
        ("--eps", float),
        ("--context-length", int),
        ("--context-dim", int),
        ("--linear-projection", int),
        ("--layers", int),
        ("--batch", int),
    ):
        k.add_argument(flag, type=kind, required=True)
    k.add_argument("--steps", type=int, default=3)
    k.add_argument("--warmup", type=int, default=1)
    k.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    k.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        if args.command == "parity":
            parity(args)
        elif args.command == "count":
            count(args)
        elif args.command == "block":
            if args.batch < 1 or args.steps < 1 or args.warmup < 0:
                raise CheckpointError("--batch and --steps must be >= 1, --warmup >= 0")
            block_bench(args)
        else:
            if args.batch < 1 or args.steps < 1 or args.warmup < 0:
                raise CheckpointError("--batch and --steps must be >= 1, --warmup >= 0")
            bench(args)
    except (CheckpointError, cxr_safetensors.SafetensorsError, OSError, KeyError, json.JSONDecodeError) as error:
        print(f"torch_reference.py: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
