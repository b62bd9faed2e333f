/**
 * diffusers' AutoencoderKL (the Stable Diffusion 1.x / 2.x VAE) on our kernels, with diffusers'
 * parameter names so that `vae/diffusion_pytorch_model.safetensors` loads strictly:
 *
 *   encoder.conv_in, encoder.down_blocks.N.resnets.M.{norm1,conv1,norm2,conv2,conv_shortcut},
 *   encoder.down_blocks.N.downsamplers.0.conv, encoder.mid_block.resnets.{0,1},
 *   encoder.mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}, encoder.conv_norm_out,
 *   encoder.conv_out, quant_conv, post_quant_conv, decoder.conv_in, decoder.mid_block...,
 *   decoder.up_blocks.N.resnets.M..., decoder.up_blocks.N.upsamplers.0.conv, decoder.conv_norm_out,
 *   decoder.conv_out.
 *
 * The residual blocks, the up/downsamplers and the block loops are the UNet's (model/unet.ts:
 * ResnetBlock2D without a time embedding, Downsample2D with diffusers' padding-0 asymmetric pad,
 * Upsample2D, DownBlock / UpBlock without attentions or skips), as diffusers builds its VAE from its
 * UNet blocks; the mid-block attention (one head over all channels) is the VAE's own. `encode` returns the latent
 * distribution's mean and log-variance; `scaling_factor` (0.18215 for SD) is the pipeline's business:
 * latents = mean * scaling_factor for training, decode(latents / scaling_factor) for generation.
 *
 * Built inside `withParameterDtype("f16", ...)` it runs in half precision (inference only): f32 in and
 * out, f16 weights and activations between, f32 arithmetic in every kernel (the group norms'
 * statistics, the convolutions' sums, the mid-block attention's scores and softmax).
 */
import {
  add,
  attention,
  attentionComposed,
  Conv2d,
  cast,
  type Gpu,
  GroupNorm,
  Linear,
  MAX_ATTENTION_HEAD_DIM,
  Module,
  ModuleList,
  OpError,
  ParameterInit,
  permute,
  relu,
  reshape,
  silu,
  split,
  sub,
  Tensor,
  tidy,
} from "@cxr/kernels";
import { type BlockSpec, DownBlock, ResnetBlock2D, UpBlock } from "../model/unet.ts";
import type { VaeJsonConfig } from "./configs.ts";

/** The VAE's configuration (vae/config.json in camelCase). */
export interface AutoencoderKLConfig {
  inChannels: number;
  outChannels: number;
  blockOutChannels: number[];
  layersPerBlock: number;
  latentChannels: number;
  normNumGroups: number;
  sampleSize: number;
  scalingFactor: number;
  midBlockAddAttention: boolean;
}

/** Translates a validated vae/config.json. */
export function autoencoderConfigFromJson(json: VaeJsonConfig): AutoencoderKLConfig {
  return {
    inChannels: json.in_channels,
    outChannels: json.out_channels,
    blockOutChannels: [...json.block_out_channels],
    layersPerBlock: json.layers_per_block,
    latentChannels: json.latent_channels,
    normNumGroups: json.norm_num_groups,
    sampleSize: json.sample_size,
    scalingFactor: json.scaling_factor,
    midBlockAddAttention: json.mid_block_add_attention,
  };
}

/** diffusers' VAE blocks use eps 1e-6 in every group norm. */
const VAE_EPS = 1e-6;

/**
 * The VAE mid-block's spatial self-attention (diffusers `Attention` with `residual_connection=True`,
 * `bias=True`, one head of width C by default): group_norm, to_q/to_k/to_v over the H*W tokens,
 * to_out.0, plus the input.
 */
export class VaeAttention extends Module {
  readonly groupNorm: GroupNorm;
  readonly toQuery: Linear;
  readonly toKey: Linear;
  readonly toValue: Linear;
  readonly toOut: Linear;
  readonly heads: number;

  constructor(
    gpu: Gpu,
    readonly channels: number,
    readonly headDim: number,
    groups: number,
    init: ParameterInit,
  ) {
    super(gpu);
    if (channels % headDim !== 0) {
      throw new OpError(
        "VaeAttention",
        `${channels} channels are not divisible by the head width ${headDim}`,
      );
    }
    this.heads = channels / headDim;
    this.groupNorm = this.child("group_norm", new GroupNorm(gpu, groups, channels, VAE_EPS));
    this.toQuery = this.child("to_q", new Linear(gpu, channels, channels, init));
    this.toKey = this.child("to_k", new Linear(gpu, channels, channels, init));
    this.toValue = this.child("to_v", new Linear(gpu, channels, channels, init));
    const out = this.child("to_out", new ModuleList<Linear>(gpu));
    this.toOut = out.push(new Linear(gpu, channels, channels, init));
  }

  forward(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.channels) {
      throw new OpError("VaeAttention", `expects [N, ${this.channels}, H, W]`, { x });
    }
    const [batch, channels, height, width] = x.shape;
    const tokens = height * width;
    return tidy(() => {
      const normed = this.groupNorm.forward(x);
      const sequence = permute(reshape(normed, [batch, channels, tokens]), [0, 2, 1]); // [B, HW, C]
      const heads = (t: Tensor) =>
        permute(reshape(t, [batch, tokens, this.heads, this.headDim]), [0, 2, 1, 3]);
      const q = heads(this.toQuery.forward(sequence));
      const k = heads(this.toKey.forward(sequence));
      const v = heads(this.toValue.forward(sequence));
      // The fused kernel holds a head of up to MAX_ATTENTION_HEAD_DIM; SD's VAE has one head of 512.
      const attended =
        this.headDim <= MAX_ATTENTION_HEAD_DIM ? attention(q, k, v) : attentionComposed(q, k, v);
      const merged = reshape(permute(attended, [0, 2, 1, 3]), [batch, tokens, channels]);
      const projected = this.toOut.forward(merged);
      const spatial = reshape(permute(projected, [0, 2, 1]), [batch, channels, height, width]);
      return add(spatial, x);
    });
  }
}

/** UNetMidBlock2D without a time embedding: resnet, (attention), resnet. */
export class VaeMidBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<VaeAttention>;

  constructor(gpu: Gpu, channels: number, groups: number, addAttention: boolean, init: ParameterInit) {
    super(gpu);
    this.resnets = this.child("resnets", new ModuleList<ResnetBlock2D>(gpu));
    this.attentions = this.child("attentions", new ModuleList<VaeAttention>(gpu));
    this.resnets.push(new ResnetBlock2D(gpu, channels, channels, null, groups, VAE_EPS, init));
    // diffusers passes attention_head_dim = block_out_channels[-1]: one head over all channels.
    if (addAttention) this.attentions.push(new VaeAttention(gpu, channels, channels, groups, init));
    this.resnets.push(new ResnetBlock2D(gpu, channels, channels, null, groups, VAE_EPS, init));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = this.resnets.items[0].forward(x);
      if (this.attentions.items.length > 0) h = this.attentions.items[0].forward(h);
      return this.resnets.items[1].forward(h);
    });
  }
}

/** A DownEncoderBlock2D / UpDecoderBlock2D level of the VAE: the UNet's block without time embedding or attentions. */
function vaeLevel(outChannels: number, layers: number, groups: number): BlockSpec {
  return { outChannels, layers, tembChannels: null, groups, eps: VAE_EPS, attention: null };
}

export class VaeEncoder extends Module {
  readonly convIn: Conv2d;
  readonly downBlocks: ModuleList<DownBlock>;
  readonly midBlock: VaeMidBlock;
  readonly convNormOut: GroupNorm;
  readonly convOut: Conv2d;

  constructor(gpu: Gpu, config: AutoencoderKLConfig, init: ParameterInit) {
    super(gpu);
    const channels = config.blockOutChannels;
    const groups = config.normNumGroups;
    this.convIn = this.child(
      "conv_in",
      new Conv2d(gpu, config.inChannels, channels[0], 3, init, { padding: 1 }),
    );
    // DownEncoderBlock2D: resnets, then (except on the last level) a downsampler with padding 0.
    this.downBlocks = this.child("down_blocks", new ModuleList<DownBlock>(gpu));
    let previous = channels[0];
    channels.forEach((out, level) => {
      const spec = vaeLevel(out, config.layersPerBlock, groups);
      this.downBlocks.push(new DownBlock(gpu, previous, spec, level < channels.length - 1 ? 0 : null, init));
      previous = out;
    });
    const last = channels[channels.length - 1];
    this.midBlock = this.child(
      "mid_block",
      new VaeMidBlock(gpu, last, groups, config.midBlockAddAttention, init),
    );
    this.convNormOut = this.child("conv_norm_out", new GroupNorm(gpu, groups, last, VAE_EPS));
    // double_z: mean and log-variance.
    this.convOut = this.child(
      "conv_out",
      new Conv2d(gpu, last, 2 * config.latentChannels, 3, init, { padding: 1 }),
    );
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = this.convIn.forward(x);
      for (const block of this.downBlocks.items) {
        const input = h;
        h = tidy(() => block.forward(input).output);
      }
      h = this.midBlock.forward(h);
      return this.convOut.forward(silu(this.convNormOut.forward(h)));
    });
  }
}

export class VaeDecoder extends Module {
  readonly convIn: Conv2d;
  readonly midBlock: VaeMidBlock;
  readonly upBlocks: ModuleList<UpBlock>;
  readonly convNormOut: GroupNorm;
  readonly convOut: Conv2d;

  constructor(gpu: Gpu, config: AutoencoderKLConfig, init: ParameterInit) {
    super(gpu);
    const reversed = [...config.blockOutChannels].reverse();
    const groups = config.normNumGroups;
    this.convIn = this.child(
      "conv_in",
      new Conv2d(gpu, config.latentChannels, reversed[0], 3, init, { padding: 1 }),
    );
    this.midBlock = this.child(
      "mid_block",
      new VaeMidBlock(gpu, reversed[0], groups, config.midBlockAddAttention, init),
    );
    // UpDecoderBlock2D: layers_per_block + 1 resnets (no skip connections), then (except on the
    // last level) an upsampler.
    this.upBlocks = this.child("up_blocks", new ModuleList<UpBlock>(gpu));
    let previous = reversed[0];
    reversed.forEach((out, level) => {
      const spec = vaeLevel(out, config.layersPerBlock + 1, groups);
      this.upBlocks.push(new UpBlock(gpu, previous, null, spec, level < reversed.length - 1, init));
      previous = out;
    });
    const first = config.blockOutChannels[0];
    this.convNormOut = this.child("conv_norm_out", new GroupNorm(gpu, groups, first, VAE_EPS));
    this.convOut = this.child(
      "conv_out",
      new Conv2d(gpu, first, config.outChannels, 3, init, { padding: 1 }),
    );
  }

  forward(z: Tensor): Tensor {
    return tidy(() => {
      let h = this.convIn.forward(z);
      h = this.midBlock.forward(h);
      for (const block of this.upBlocks.items) {
        const input = h;
        h = tidy(() => block.forward(input));
      }
      return this.convOut.forward(silu(this.convNormOut.forward(h)));
    });
  }
}

/** The posterior q(z | x) = N(mean, exp(logvar)), logvar clamped to [-30, 20] as diffusers does. */
export interface LatentDistribution {
  mean: Tensor;
  logvar: Tensor;
}

export class AutoencoderKL extends Module {
  readonly encoder: VaeEncoder;
  readonly decoder: VaeDecoder;
  readonly quantConv: Conv2d;
  readonly postQuantConv: Conv2d;

  constructor(
    gpu: Gpu,
    readonly config: AutoencoderKLConfig,
    init: ParameterInit = new ParameterInit(0),
  ) {
    super(gpu);
    for (const channels of config.blockOutChannels) {
      if (channels % config.normNumGroups !== 0) {
        throw new OpError(
          "AutoencoderKL",
          `block channels ${channels} are not divisible by ${config.normNumGroups} groups`,
        );
      }
    }
    this.encoder = this.child("encoder", new VaeEncoder(gpu, config, init));
    this.decoder = this.child("decoder", new VaeDecoder(gpu, config, init));
    const latent = config.latentChannels;
    this.quantConv = this.child("quant_conv", new Conv2d(gpu, 2 * latent, 2 * latent, 1, init));
    this.postQuantConv = this.child("post_quant_conv", new Conv2d(gpu, latent, latent, 1, init));
  }

  /** The dtype of the weights: "f16" when built inside `withParameterDtype("f16", ...)`. */
  get precision(): "f32" | "f16" {
    return this.quantConv.weight.dtype === "f16" ? "f16" : "f32";
  }

  /**
   * Images [N, C, H, W] in [-1, 1] (H, W divisible by 2^(levels-1)) -> the latent distribution, f32.
   * With f16 weights the images are cast to f16, the encoder runs its f16 kernels and the moments are
   * cast back to f32 before the split and the clamp.
   */
  encode(x: Tensor): LatentDistribution {
    const factor = 2 ** (this.config.blockOutChannels.length - 1);
    if (x.rank !== 4 || x.shape[1] !== this.config.inChannels || x.shape[2] % factor || x.shape[3] % factor) {
      throw new OpError(
        "AutoencoderKL.encode",
        `expects [N, ${this.config.inChannels}, H, W] with H and W divisible by ${factor}`,
        { x },
      );
    }
    return tidy(() => {
      const moments = this.toF32(this.quantConv.forward(this.encoder.forward(this.toOwnDtype(x))));
      const [mean, rawLogvar] = split(moments, [this.config.latentChannels, this.config.latentChannels], 1);
      return { mean, logvar: clampTensor(rawLogvar, -30, 20) };
    });
  }

  /**
   * Latents [N, latent, h, w] (already divided by scaling_factor) -> images f32 [N, out, h * 2^(levels-1), ...].
   * With f16 weights the latents are cast to f16 and the decoded images back to f32.
   */
  decode(z: Tensor): Tensor {
    if (z.rank !== 4 || z.shape[1] !== this.config.latentChannels) {
      throw new OpError("AutoencoderKL.decode", `expects [N, ${this.config.latentChannels}, h, w]`, { z });
    }
    return tidy(() => this.toF32(this.decoder.forward(this.postQuantConv.forward(this.toOwnDtype(z)))));
  }

  /** x in the weights' dtype (inside a tidy: a cast is released with the other temporaries). */
  private toOwnDtype(x: Tensor): Tensor {
    return x.dtype === this.precision ? x : cast(x, this.precision);
  }

  private toF32(x: Tensor): Tensor {
    return x.dtype === "f32" ? x : cast(x, "f32");
  }
}

/** clamp(x, lo, hi) = lo + relu(x - lo) - relu(x - hi), from existing elementwise kernels. */
function clampTensor(x: Tensor, lo: number, hi: number): Tensor {
  return tidy(() => {
    const low = Tensor.scalar(x.gpu, lo);
    const high = Tensor.scalar(x.gpu, hi);
    return sub(add(relu(sub(x, low)), low), relu(sub(x, high)));
  });
}
