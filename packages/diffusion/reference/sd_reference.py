#!/usr/bin/python3
"""Plain-PyTorch references for loading published Stable Diffusion checkpoints (no diffusers,
transformers or safetensors packages needed; Debian's python3-torch 1.13 is enough).

Commands:
  vae-folder OUT [--dtype float32|float16|bfloat16] [--seed S] [--config JSON]
      Builds a tiny SD-2.x-shaped AutoencoderKL in plain torch, written module by module after
      diffusers' (same parameter names and forward pass), with random weights; writes a diffusers
      folder (model_index.json, vae/config.json, vae/diffusion_pytorch_model.safetensors,
      tokenizer/vocab.json + merges.txt + tokenizer_config.json) and OUT/../<name>-parity.safetensors
      with inputs and torch's outputs: x, mean, logvar (encode) and z, decoded (decode).
  sd-folder OUT [--seed S]
      A complete tiny SD-2.x-shaped diffusers folder (model_index.json with all five components,
      unet/ with F16 weights, text_encoder/ with F32 weights and transformers' position_ids buffer,
      vae/, tokenizer/, scheduler/ = SD 2.1-base's PNDM config), the parameter names and shapes of
      the UNet and text encoder derived from the configs by torch_reference.py (the generator's
      PyTorch twin, beside this file) after translating the diffusers configs here; and
      OUT-parity.safetensors with torch's text encoder output for prompt ids from the tokenizer
      transliteration and torch's UNet output for random latents and timesteps.
  sd-generate FOLDER INPUTS OUT [--steps N] [--guidance G] [--guidance-rescale PHI]
      diffusers' StableDiffusionPipeline loop over an sd-folder, in plain torch: prompts and "" (or the
      negative prompts, INPUTS' metadata "negative_prompts", JSON, one per prompt) through
      the tokenizer transliteration and the text encoder, INPUTS' "latents" as the initial noise,
      per PNDM (PLMS, skip_prk_steps) timestep the UNet on the doubled batch, guidance (then, with
      --guidance-rescale, diffusers' rescale_noise_cfg transliterated), PNDM step
      (transliterated from diffusers' PNDMScheduler.step_plms / _get_prev_sample), then latents /
      scaling_factor through the VAE decoder. Prompts: INPUTS' metadata "prompts" (JSON). Writes
      OUT with "latents" (final) and "images" (decoded / 2 + 0.5, clamped to [0, 1]).
  tokenize DIR
      Reads a JSON list of prompts on stdin, prints their CLIP ids (77, padded) as JSON, with a
      transliteration of transformers' CLIPTokenizer (no ftfy) over DIR/vocab.json + merges.txt.
  convert IN OUT [--dtype float32|float16|keep] [--prefix P] [--strip-prefix P]
      torch.load a state dict (.pt/.pth/.bin/.ckpt: a dict of tensors, or {"state_dict": ...}),
      writes OUT as safetensors and prints the key mapping (JSON lines on stdout).
"""
import argparse
import json
import os
import re
import sys
import unicodedata

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# safetensors: the project's one Python reader/writer, packages/kernels/python/cxr_safetensors.py
# (dtypes kept as given: F32, F16, BF16, I64 here).

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "kernels", "python"))
import cxr_safetensors  # noqa: E402

# safetensors names of the dtypes `convert` writes (for its printed key mapping).
DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


# ---------------------------------------------------------------------------------------------
# AutoencoderKL, after diffusers (models/autoencoders/vae.py, resnet.py, attention_processor.py).

EPS = 1e-6


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=EPS)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class Attention(nn.Module):
    """diffusers Attention as the VAE builds it: one head of width C, biases, residual."""

    def __init__(self, channels, groups):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x):
        b, c, h, w = x.shape
        seq = self.group_norm(x).view(b, c, h * w).transpose(1, 2)
        q, k, v = self.to_q(seq), self.to_k(seq), self.to_v(seq)
        scores = torch.baddbmm(torch.empty(b, h * w, h * w), q, k.transpose(1, 2), beta=0, alpha=c ** -0.5)
        out = torch.bmm(scores.float().softmax(dim=-1), v)
        out = self.to_out[1](self.to_out[0](out))
        return out.transpose(1, 2).reshape(b, c, h, w) + x


class MidBlock(nn.Module):
    def __init__(self, channels, groups, attention=True):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, groups), ResnetBlock2D(channels, channels, groups)])
        self.attentions = nn.ModuleList([Attention(channels, groups)] if attention else [])

    def forward(self, x):
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


class Downsample2D(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample2D(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownEncoderBlock2D(nn.Module):
    def __init__(self, cin, cout, layers, downsample, groups):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, groups) for i in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(cout)] if downsample else [])

    def forward(self, x):
        for module in list(self.resnets) + list(self.downsamplers):
            x = module(x)
        return x


class UpDecoderBlock2D(nn.Module):
    def __init__(self, cin, cout, layers, upsample, groups):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, groups) for i in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(cout)] if upsample else [])

    def forward(self, x):
        for module in list(self.resnets) + list(self.upsamplers):
            x = module(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, groups = cfg["block_out_channels"], cfg["norm_num_groups"]
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1)
        blocks, previous = [], ch[0]
        for level, out in enumerate(ch):
            blocks.append(DownEncoderBlock2D(previous, out, cfg["layers_per_block"], level < len(ch) - 1, groups))
            previous = out
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(ch[-1], groups, cfg.get("mid_block_add_attention", True))
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=EPS)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg["latent_channels"], 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, groups = list(reversed(cfg["block_out_channels"])), cfg["norm_num_groups"]
        self.conv_in = nn.Conv2d(cfg["latent_channels"], ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], groups, cfg.get("mid_block_add_attention", True))
        blocks, previous = [], ch[0]
        for level, out in enumerate(ch):
            blocks.append(UpDecoderBlock2D(previous, out, cfg["layers_per_block"] + 1, level < len(ch) - 1, groups))
            previous = out
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=EPS)
        self.conv_out = nn.Conv2d(ch[-1], cfg["out_channels"], 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        latent = cfg["latent_channels"]
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1)
        self.post_quant_conv = nn.Conv2d(latent, latent, 1)

    def encode(self, x):
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = torch.chunk(moments, 2, dim=1)
        return mean, torch.clamp(logvar, -30.0, 20.0)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


TINY_VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.21.0",
    "act_fn": "silu",
    # SD 2.x has [128, 256, 512, 512]: four levels (latents at 1/8), one head of width C in the
    # mid-block; 288 > 256 exercises the unfused attention path that SD's 512 needs.
    "block_out_channels": [16, 32, 32, 288],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 8,
    "sample_size": 32,
    "scaling_factor": 0.18215,
}

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


# A small vocabulary in CLIP's layout: bytes, bytes + </w>, merges, then the two special tokens.
TINY_MERGES = [("c", "a"), ("ca", "t</w>"), ("o", "f</w>"), ("h", "o"), ("o", "t"), ("p", "ho"), ("t", "o</w>"), ("pho", "to</w>"),
               ("e", "r</w>"), ("l", "e"), ("m", "a"), ("ma", "le</w>")]


def write_tokenizer(directory, merges=TINY_MERGES):
    os.makedirs(directory, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as handle:
        json.dump(vocab, handle, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as handle:
        json.dump({"model_max_length": 77, "do_lower_case": True, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                   "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}, handle)
    # SD 2.x pads with "!" (its special_tokens_map.json overrides tokenizer_config.json).
    with open(os.path.join(directory, "special_tokens_map.json"), "w", encoding="utf-8") as handle:
        json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"}, handle)


def vae_folder(args):
    cfg = dict(TINY_VAE_CONFIG)
    if args.config:
        cfg.update(json.loads(args.config))
    torch.manual_seed(args.seed)
    model = AutoencoderKL(cfg).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            # Random weights of a realistic scale (norm weights near 1, everything else small).
            if name.endswith("weight") and parameter.dim() == 1:
                parameter.copy_(1 + 0.1 * torch.randn_like(parameter))
            else:
                fan_in = parameter[0].numel() if parameter.dim() > 1 else parameter.numel()
                parameter.copy_(torch.randn_like(parameter) / fan_in ** 0.5)
    dtype = TORCH_DTYPES[args.dtype]
    stored = {name: tensor.detach().to(dtype) for name, tensor in model.state_dict().items()}
    # The reference computes in f32 with exactly the stored (rounded) weights.
    model.load_state_dict({name: tensor.float() for name, tensor in stored.items()})
    out = args.out
    os.makedirs(os.path.join(out, "vae"), exist_ok=True)
    with open(os.path.join(out, "model_index.json"), "w") as handle:
        json.dump({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.21.0",
                   "vae": ["diffusers", "AutoencoderKL"], "tokenizer": ["transformers", "CLIPTokenizer"]}, handle, indent=2)
    with open(os.path.join(out, "vae", "config.json"), "w") as handle:
        json.dump(cfg, handle, indent=2)
    cxr_safetensors.write(os.path.join(out, "vae", "diffusion_pytorch_model.safetensors"), stored, {"format": "pt"})
    write_tokenizer(os.path.join(out, "tokenizer"))
    size = cfg["sample_size"]
    factor = 2 ** (len(cfg["block_out_channels"]) - 1)
    generator = torch.Generator().manual_seed(args.seed + 1)
    x = torch.rand(2, cfg["in_channels"], size, size, generator=generator) * 2 - 1
    z = torch.randn(2, cfg["latent_channels"], size // factor, size // factor, generator=generator)
    with torch.no_grad():
        mean, logvar = model.encode(x)
        decoded = model.decode(z)
    parity = os.path.join(os.path.dirname(os.path.abspath(out)), os.path.basename(os.path.abspath(out)) + "-parity.safetensors")
    cxr_safetensors.write(parity, {"x": x, "mean": mean, "logvar": logvar, "z": z, "decoded": decoded})
    print(json.dumps({"folder": out, "parity": parity, "parameters": sum(p.numel() for p in model.parameters())}))


# ---------------------------------------------------------------------------------------------
# CLIP tokenizer, transliterated from transformers' CLIPTokenizer without ftfy (BasicTokenizer
# cleaning). Python's re has no \p{L}: letters are [^\W\d_] and numbers \d, which agree with
# CLIP's pattern on letters, decimal digits and punctuation (what the tests feed it).

PATTERN = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.IGNORECASE)


def basic_clean(text):
    text = unicodedata.normalize("NFC", text)
    out = []
    for char in text:
        cp = ord(char)
        if char in " \t\n\r" or unicodedata.category(char) == "Zs":
            out.append(" ")
        elif cp == 0 or cp == 0xFFFD or unicodedata.category(char).startswith("C"):
            continue
        elif 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x2FA1F:
            out.append(f" {char} ")
        else:
            out.append(char)
    return " ".join(word.lower() for word in "".join(out).split())


def tokenize(args):
    directory = args.dir
    with open(os.path.join(directory, "vocab.json"), encoding="utf-8") as handle:
        encoder = json.load(handle)
    with open(os.path.join(directory, "merges.txt"), encoding="utf-8") as handle:
        merges = handle.read().strip().split("\n")[1:49152 - 256 - 2 + 1]
    ranks = {tuple(merge.split()): index for index, merge in enumerate(merges)}
    byte_encoder = bytes_to_unicode()
    pad = "<|endoftext|>"
    special_path = os.path.join(directory, "special_tokens_map.json")
    if os.path.exists(special_path):
        with open(special_path) as handle:
            value = json.load(handle).get("pad_token", pad)
            pad = value["content"] if isinstance(value, dict) else value

    def bpe(token):
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            bigram = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
            if bigram not in ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
        return word

    results = []
    for prompt in json.load(sys.stdin):
        ids = []
        for token in PATTERN.findall(basic_clean(prompt)):
            mapped = "".join(byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(encoder.get(piece, encoder["<|endoftext|>"]) for piece in bpe(mapped))
        ids = [encoder["<|startoftext|>"]] + ids[:75] + [encoder["<|endoftext|>"]]
        ids += [encoder[pad]] * (77 - len(ids))
        results.append(ids)
    print(json.dumps(results))


# ---------------------------------------------------------------------------------------------
# A complete tiny SD 2.x folder: UNet and text encoder through torch_reference.py's functions.

TINY_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.21.0",
    "act_fn": "silu",
    "attention_head_dim": [2, 4],
    "block_out_channels": [32, 64],
    "center_input_sample": False,
    "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 8,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 8,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": False,
    "use_linear_projection": True,
}

TINY_TEXT_CONFIG = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": 32,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "pad_token_id": 1,
    "projection_dim": 32,
    "torch_dtype": "float32",
}

SD21_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.10.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

SD_PROMPTS = ["a photo of a cat", "74 year old BLACK male. No acute intrathoracic abnormalities identified."]


def camel_unet(cfg):
    """diffusers' unet/config.json in the camelCase keys torch_reference.py reads (written independently of the TypeScript translation)."""
    return {
        "sampleSize": cfg["sample_size"], "inChannels": cfg["in_channels"], "outChannels": cfg["out_channels"],
        "blockOutChannels": cfg["block_out_channels"], "layersPerBlock": cfg["layers_per_block"],
        "downBlockTypes": cfg["down_block_types"], "upBlockTypes": cfg["up_block_types"],
        "attentionHeadDim": cfg["attention_head_dim"], "crossAttentionDim": cfg["cross_attention_dim"],
        "normNumGroups": cfg["norm_num_groups"], "normEps": cfg["norm_eps"],
        "useLinearProjection": cfg["use_linear_projection"], "flipSinToCos": cfg["flip_sin_to_cos"],
        "freqShift": cfg["freq_shift"], "transformerLayersPerBlock": cfg.get("transformer_layers_per_block", 1),
        "downsamplePadding": cfg["downsample_padding"],
    }


def camel_text(cfg):
    return {
        "vocabSize": cfg["vocab_size"], "hiddenSize": cfg["hidden_size"], "intermediateSize": cfg["intermediate_size"],
        "numLayers": cfg["num_hidden_layers"], "numHeads": cfg["num_attention_heads"],
        "maxPositions": cfg["max_position_embeddings"], "hiddenAct": cfg["hidden_act"], "layerNormEps": cfg["layer_norm_eps"],
    }


def random_parameters(shapes, generator):
    params = {}
    for name, shape in shapes.items():
        if name.endswith(".weight") and len(shape) == 1:  # norm scales near 1
            params[name] = 1 + 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 1:
            params[name] = 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = 1
            for dim in shape[1:]:
                fan_in *= dim
            scale = 0.5 if "embedding" in name else 1 / fan_in ** 0.5
            params[name] = scale * torch.randn(shape, generator=generator)
    return params


def sd_folder(args):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_reference  # the generator's PyTorch twin

    out = args.out
    # The VAE and tokenizer of vae-folder, at SD's four levels but narrow.
    vae_args = argparse.Namespace(out=out, dtype="float32", seed=args.seed, config=json.dumps({"block_out_channels": [8, 8, 16, 16], "norm_num_groups": 4, "sample_size": 64}))
    vae_folder(vae_args)
    with open(os.path.join(out, "tokenizer", "vocab.json"), encoding="utf-8") as handle:
        vocab_size = len(json.load(handle))
    text_cfg = dict(TINY_TEXT_CONFIG, vocab_size=vocab_size)
    unet_cfg = dict(TINY_UNET_CONFIG)
    for component, cfg, name in (("unet", unet_cfg, "config.json"), ("text_encoder", text_cfg, "config.json"), ("scheduler", SD21_SCHEDULER, "scheduler_config.json")):
        os.makedirs(os.path.join(out, component), exist_ok=True)
        with open(os.path.join(out, component, name), "w") as handle:
            json.dump(cfg, handle, indent=2)
    with open(os.path.join(out, "model_index.json"), "w") as handle:
        json.dump({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.21.0", "feature_extractor": [None, None],
                   "requires_safety_checker": False, "safety_checker": [None, None], "scheduler": ["diffusers", "PNDMScheduler"],
                   "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
                   "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}, handle, indent=2)
    text, unet = camel_text(text_cfg), camel_unet(unet_cfg)
    generator = torch.Generator().manual_seed(args.seed + 2)
    text_params = random_parameters(torch_reference.text_encoder_shapes(text), generator)
    unet_params = random_parameters(torch_reference.unet_shapes(unet), generator)
    # Stored as published: UNet in half precision, the text encoder in f32 with transformers' position_ids.
    unet_stored = {name: tensor.half() for name, tensor in unet_params.items()}
    unet_params = {name: tensor.float() for name, tensor in unet_stored.items()}
    text_stored = dict(text_params)
    text_stored["text_model.embeddings.position_ids"] = torch.arange(text["maxPositions"], dtype=torch.int64)[None]
    cxr_safetensors.write(os.path.join(out, "unet", "diffusion_pytorch_model.safetensors"), unet_stored, {"format": "pt"})
    cxr_safetensors.write(os.path.join(out, "text_encoder", "model.safetensors"), text_stored, {"format": "pt"})

    # Prompt ids from the tokenizer transliteration (SD 2.x padding), then both networks in f32.
    old_stdin, old_stdout = sys.stdin, sys.stdout
    import io
    sys.stdin, sys.stdout = io.StringIO(json.dumps(SD_PROMPTS)), io.StringIO()
    try:
        tokenize(argparse.Namespace(dir=os.path.join(out, "tokenizer")))
        ids = json.loads(sys.stdout.getvalue())
    finally:
        sys.stdin, sys.stdout = old_stdin, old_stdout
    ids = torch.tensor(ids, dtype=torch.int64)
    size = unet["sampleSize"]
    sample = torch.randn(len(SD_PROMPTS), unet["inChannels"], size, size, generator=generator)
    timesteps = torch.tensor([999.0, 1.0][: len(SD_PROMPTS)])
    with torch.no_grad():
        hidden = torch_reference.text_encoder_forward(text_params, text, ids)
        output = torch_reference.unet_forward(unet_params, unet, sample, timesteps, hidden)
    parity = os.path.abspath(out) + "-parity.safetensors"
    # vae-folder wrote the VAE's entries there; add the generator's.
    vae_reference = {name: torch.from_numpy(array.copy()) for name, array in cxr_safetensors.read(parity)[0].items()}
    cxr_safetensors.write(parity, dict(vae_reference, ids=ids, text_hidden=hidden, sample=sample, timesteps=timesteps, unet_output=output))
    print(json.dumps({"folder": out, "parity": parity, "prompts": SD_PROMPTS}))


def pndm_timesteps(cfg, steps):
    ratio = cfg["num_train_timesteps"] // steps
    base = [round(k * ratio) + cfg["steps_offset"] for k in range(steps)]
    return list(reversed(base[:-1] + base[-2:-1] + base[-1:]))


class PlmsReference:
    """diffusers' PNDMScheduler with skip_prk_steps (epsilon prediction), step by step."""

    def __init__(self, cfg, steps):
        count = cfg["num_train_timesteps"]
        betas = torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, count, dtype=torch.float32) ** 2
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.final = torch.tensor(1.0) if cfg["set_alpha_to_one"] else self.alphas_cumprod[0]
        self.ratio = count // steps
        self.ets, self.counter, self.cur_sample = [], 0, None

    def step(self, output, timestep, sample):
        prev = timestep - self.ratio
        if self.counter != 1:
            self.ets = self.ets[-3:]
            self.ets.append(output)
        else:
            prev = timestep
            timestep = timestep + self.ratio
        ets = self.ets
        if len(ets) == 1 and self.counter == 0:
            self.cur_sample = sample
        elif len(ets) == 1 and self.counter == 1:
            output = (output + ets[-1]) / 2
            sample, self.cur_sample = self.cur_sample, None
        elif len(ets) == 2:
            output = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            output = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        else:
            output = (1 / 24) * (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4])
        a_t = self.alphas_cumprod[timestep]
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final
        b_t, b_prev = 1 - a_t, 1 - a_prev
        sample_coeff = (a_prev / a_t) ** 0.5
        denom = a_t * b_prev ** 0.5 + (a_t * b_t * a_prev) ** 0.5
        self.counter += 1
        return sample_coeff * sample - (a_prev - a_t) * output / denom


def sd_generate(args):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import io
    import torch_reference

    folder = args.folder

    def load_json(*parts):
        with open(os.path.join(folder, *parts)) as handle:
            return json.load(handle)

    def load_weights(*parts):
        return {name: torch.from_numpy(array.astype("float32")) for name, array in cxr_safetensors.read(os.path.join(folder, *parts))[0].items() if array.dtype.kind == "f"}

    unet_cfg, text_cfg, vae_cfg = load_json("unet", "config.json"), load_json("text_encoder", "config.json"), load_json("vae", "config.json")
    sched = load_json("scheduler", "scheduler_config.json")
    if sched["_class_name"] != "PNDMScheduler" or sched["prediction_type"] != "epsilon":
        raise SystemExit("sd-generate: the reference implements PNDM with epsilon prediction only")
    unet, text = camel_unet(unet_cfg), camel_text(text_cfg)
    unet_params, text_params = load_weights("unet", "diffusion_pytorch_model.safetensors"), load_weights("text_encoder", "model.safetensors")
    vae = AutoencoderKL(vae_cfg).eval()
    vae.load_state_dict(load_weights("vae", "diffusion_pytorch_model.safetensors"))
    inputs, metadata = cxr_safetensors.read(args.inputs)
    prompts = json.loads(metadata["prompts"])
    latents = torch.from_numpy(inputs["latents"].astype("float32"))
    guided = args.guidance != 1
    negatives = json.loads(metadata["negative_prompts"]) if "negative_prompts" in metadata else [""] * len(prompts)
    if len(negatives) != len(prompts):
        raise SystemExit(f"sd-generate: {len(negatives)} negative prompts for {len(prompts)} prompts")
    texts = (negatives + prompts) if guided else prompts
    old_stdin, old_stdout = sys.stdin, sys.stdout
    sys.stdin, sys.stdout = io.StringIO(json.dumps(texts)), io.StringIO()
    try:
        tokenize(argparse.Namespace(dir=os.path.join(folder, "tokenizer")))
        ids = torch.tensor(json.loads(sys.stdout.getvalue()), dtype=torch.int64)
    finally:
        sys.stdin, sys.stdout = old_stdin, old_stdout
    scheduler = PlmsReference(sched, args.steps)
    with torch.no_grad():
        context = torch_reference.text_encoder_forward(text_params, text, ids)
        for t in pndm_timesteps(sched, args.steps):
            model_input = torch.cat([latents, latents]) if guided else latents
            timesteps = torch.full((model_input.shape[0],), float(t))
            prediction = torch_reference.unet_forward(unet_params, unet, model_input, timesteps, context)
            if guided:
                uncond, cond = prediction.chunk(2)
                prediction = uncond + args.guidance * (cond - uncond)
                if args.guidance_rescale > 0:
                    # diffusers' rescale_noise_cfg: per sample, torch.std over every other dim.
                    dims = list(range(1, cond.ndim))
                    ratio = cond.std(dim=dims, keepdim=True) / prediction.std(dim=dims, keepdim=True)
                    phi = args.guidance_rescale
                    prediction = phi * (prediction * ratio) + (1 - phi) * prediction
            latents = scheduler.step(prediction, t, latents)
        images = (vae.decode(latents / vae_cfg.get("scaling_factor", 0.18215)) / 2 + 0.5).clamp(0, 1)
    cxr_safetensors.write(args.out, {"latents": latents, "images": images})
    print(json.dumps({"timesteps": pndm_timesteps(sched, args.steps)}))


# ---------------------------------------------------------------------------------------------
# cxr convert: a torch.save / torchvision state dict to safetensors.


# torchvision's published DenseNet weights (densenet121-a639ec97.pth) predate a rename: their keys
# read "denselayer1.norm.1.weight" where the model has "denselayer1.norm1.weight". torchvision's
# own loader fixes them with this pattern; so does the conversion.
DENSENET_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def convert(args):
    try:
        loaded = torch.load(args.input, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - report any unpickling failure with the file name
        raise SystemExit(f"{args.input}: torch.load failed: {error}")
    state = loaded
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        state = loaded["state_dict"]
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict) or not state:
        raise SystemExit(f"{args.input}: not a state dict (a dict of tensors, or {{'state_dict': ...}}); got {type(loaded).__name__}")
    tensors, mapping, skipped = {}, [], []
    for key, value in state.items():
        if not torch.is_tensor(value):
            skipped.append((key, type(value).__name__))
            continue
        name = key
        legacy = DENSENET_LEGACY.match(name)
        if legacy:
            name = legacy.group(1) + legacy.group(2)
        if args.strip_prefix and name.startswith(args.strip_prefix):
            name = name[len(args.strip_prefix):]
        name = (args.prefix or "") + name
        tensor = value.detach()
        if tensor.is_floating_point():
            if args.dtype == "float32":
                tensor = tensor.float()
            elif args.dtype == "float16":
                tensor = tensor.half()
            elif tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16):
                tensor = tensor.float()
        elif tensor.dtype != torch.int64:
            tensor = tensor.long()
        if name in tensors:
            raise SystemExit(f"{args.input}: two keys map to {name!r}")
        tensors[name] = tensor
        mapping.append({"from": key, "to": name, "dtype": DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape)})
    cxr_safetensors.write(args.output, tensors, {"format": "pt", "source": os.path.basename(args.input)})
    for row in mapping:
        print(json.dumps(row))
    for key, kind in skipped:
        print(json.dumps({"from": key, "skipped": kind}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    folder = commands.add_parser("vae-folder")
    folder.add_argument("out")
    folder.add_argument("--dtype", choices=sorted(TORCH_DTYPES), default="float32")
    folder.add_argument("--seed", type=int, default=0)
    folder.add_argument("--config", default=None, help="JSON overriding keys of the tiny VAE config")
    folder.set_defaults(run=vae_folder)
    sd = commands.add_parser("sd-folder")
    sd.add_argument("out")
    sd.add_argument("--seed", type=int, default=0)
    sd.set_defaults(run=sd_folder)
    gen = commands.add_parser("sd-generate")
    gen.add_argument("folder")
    gen.add_argument("inputs")
    gen.add_argument("out")
    gen.add_argument("--steps", type=int, default=3)
    gen.add_argument("--guidance", type=float, default=3.0)
    gen.add_argument("--guidance-rescale", type=float, default=0.0)
    gen.set_defaults(run=sd_generate)
    tok = commands.add_parser("tokenize")
    tok.add_argument("dir")
    tok.set_defaults(run=tokenize)
    conv = commands.add_parser("convert")
    conv.add_argument("input")
    conv.add_argument("output")
    conv.add_argument("--dtype", choices=["float32", "float16", "keep"], default="keep")
    conv.add_argument("--prefix", default="")
    conv.add_argument("--strip-prefix", default="")
    conv.set_defaults(run=convert)
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        args.run(args)
    except cxr_safetensors.SafetensorsError as error:
        raise SystemExit(f"sd_reference.py: {error}") from None


if __name__ == "__main__":
    main()
