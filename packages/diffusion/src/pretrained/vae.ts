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
 * Built from @cxr/kernels layers and ops only (Conv2d, GroupNorm, Linear, SiLU, fused attention,
 * nearest upsampling, concat for the downsampler's asymmetric padding). `encode` returns the latent
 * distribution's mean and log-variance; `scaling_factor` (0.18215 for SD) is the pipeline's business:
 * latents = mean * scaling_factor for training, decode(latents / scaling_factor) for generation.
 */
import {
  add,
  attention,
  attentionComposed,
  Conv2d,
  concat,
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
  upsampleNearest,
} from "@cxr/kernels";
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

/** ResnetBlock2D without a time embedding: silu(norm1) -> conv1 -> silu(norm2) -> conv2, plus the shortcut. */
export class VaeResnetBlock extends Module {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly convShortcut: Conv2d | null;

  constructor(gpu: Gpu, inChannels: number, outChannels: number, groups: number, init: ParameterInit) {
    super(gpu);
    this.norm1 = this.child("norm1", new GroupNorm(gpu, groups, inChannels, VAE_EPS));
    this.conv1 = this.child("conv1", new Conv2d(gpu, inChannels, outChannels, 3, init, { padding: 1 }));
    this.norm2 = this.child("norm2", new GroupNorm(gpu, groups, outChannels, VAE_EPS));
    this.conv2 = this.child("conv2", new Conv2d(gpu, outChannels, outChannels, 3, init, { padding: 1 }));
    this.convShortcut =
      inChannels === outChannels
        ? null
        : this.child("conv_shortcut", new Conv2d(gpu, inChannels, outChannels, 1, init));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      const h = this.conv2.forward(silu(this.norm2.forward(this.conv1.forward(silu(this.norm1.forward(x))))));
      return add(this.convShortcut ? this.convShortcut.forward(x) : x, h);
    });
  }
}

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
  readonly resnets: ModuleList<VaeResnetBlock>;
  readonly attentions: ModuleList<VaeAttention>;

  constructor(gpu: Gpu, channels: number, groups: number, addAttention: boolean, init: ParameterInit) {
    super(gpu);
    this.resnets = this.child("resnets", new ModuleList<VaeResnetBlock>(gpu));
    this.attentions = this.child("attentions", new ModuleList<VaeAttention>(gpu));
    this.resnets.push(new VaeResnetBlock(gpu, channels, channels, groups, init));
    // diffusers passes attention_head_dim = block_out_channels[-1]: one head over all channels.
    if (addAttention) this.attentions.push(new VaeAttention(gpu, channels, channels, groups, init));
    this.resnets.push(new VaeResnetBlock(gpu, channels, channels, groups, init));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = this.resnets.items[0].forward(x);
      if (this.attentions.items.length > 0) h = this.attentions.items[0].forward(h);
      return this.resnets.items[1].forward(h);
    });
  }
}

/** Downsample2D with padding 0: zero-pad one column right and one row bottom, then 3x3 stride 2. */
export class VaeDownsample extends Module {
  readonly conv: Conv2d;
  constructor(gpu: Gpu, channels: number, init: ParameterInit) {
    super(gpu);
    this.conv = this.child("conv", new Conv2d(gpu, channels, channels, 3, init, { stride: 2, padding: 0 }));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [n, c, h, w] = x.shape;
      const zerosColumn = zeroTensor(this.gpu, [n, c, h, 1]);
      const wider = concat([x, zerosColumn], 3);
      const zerosRow = zeroTensor(this.gpu, [n, c, 1, w + 1]);
      return this.conv.forward(concat([wider, zerosRow], 2));
    });
  }
}

function zeroTensor(gpu: Gpu, shape: number[]): Tensor {
  return Tensor.zeros(gpu, shape);
}

/** Upsample2D: nearest x2, then 3x3 conv. */
export class VaeUpsample extends Module {
  readonly conv: Conv2d;
  constructor(gpu: Gpu, channels: number, init: ParameterInit) {
    super(gpu);
    this.conv = this.child("conv", new Conv2d(gpu, channels, channels, 3, init, { padding: 1 }));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => this.conv.forward(upsampleNearest(x, 2)));
  }
}

/** DownEncoderBlock2D: resnets, then a downsampler except on the last level. */
export class DownEncoderBlock extends Module {
  readonly resnets: ModuleList<VaeResnetBlock>;
  readonly downsamplers: ModuleList<VaeDownsample>;
  constructor(
    gpu: Gpu,
    inChannels: number,
    outChannels: number,
    layers: number,
    downsample: boolean,
    groups: number,
    init: ParameterInit,
  ) {
    super(gpu);
    this.resnets = this.child("resnets", new ModuleList<VaeResnetBlock>(gpu));
    for (let layer = 0; layer < layers; layer++) {
      this.resnets.push(
        new VaeResnetBlock(gpu, layer === 0 ? inChannels : outChannels, outChannels, groups, init),
      );
    }
    this.downsamplers = this.child("downsamplers", new ModuleList<VaeDownsample>(gpu));
    if (downsample) this.downsamplers.push(new VaeDownsample(gpu, outChannels, init));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = x;
      for (const resnet of this.resnets.items) h = resnet.forward(h);
      for (const down of this.downsamplers.items) h = down.forward(h);
      return h;
    });
  }
}

/** UpDecoderBlock2D: layers_per_block + 1 resnets, then an upsampler except on the last level. */
export class UpDecoderBlock extends Module {
  readonly resnets: ModuleList<VaeResnetBlock>;
  readonly upsamplers: ModuleList<VaeUpsample>;
  constructor(
    gpu: Gpu,
    inChannels: number,
    outChannels: number,
    layers: number,
    upsample: boolean,
    groups: number,
    init: ParameterInit,
  ) {
    super(gpu);
    this.resnets = this.child("resnets", new ModuleList<VaeResnetBlock>(gpu));
    for (let layer = 0; layer < layers; layer++) {
      this.resnets.push(
        new VaeResnetBlock(gpu, layer === 0 ? inChannels : outChannels, outChannels, groups, init),
      );
    }
    this.upsamplers = this.child("upsamplers", new ModuleList<VaeUpsample>(gpu));
    if (upsample) this.upsamplers.push(new VaeUpsample(gpu, outChannels, init));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = x;
      for (const resnet of this.resnets.items) h = resnet.forward(h);
      for (const up of this.upsamplers.items) h = up.forward(h);
      return h;
    });
  }
}

export class VaeEncoder extends Module {
  readonly convIn: Conv2d;
  readonly downBlocks: ModuleList<DownEncoderBlock>;
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
    this.downBlocks = this.child("down_blocks", new ModuleList<DownEncoderBlock>(gpu));
    let previous = channels[0];
    channels.forEach((out, level) => {
      this.downBlocks.push(
        new DownEncoderBlock(
          gpu,
          previous,
          out,
          config.layersPerBlock,
          level < channels.length - 1,
          groups,
          init,
        ),
      );
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
      for (const block of this.downBlocks.items) h = block.forward(h);
      h = this.midBlock.forward(h);
      return this.convOut.forward(silu(this.convNormOut.forward(h)));
    });
  }
}

export class VaeDecoder extends Module {
  readonly convIn: Conv2d;
  readonly midBlock: VaeMidBlock;
  readonly upBlocks: ModuleList<UpDecoderBlock>;
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
    this.upBlocks = this.child("up_blocks", new ModuleList<UpDecoderBlock>(gpu));
    let previous = reversed[0];
    reversed.forEach((out, level) => {
      this.upBlocks.push(
        new UpDecoderBlock(
          gpu,
          previous,
          out,
          config.layersPerBlock + 1,
          level < reversed.length - 1,
          groups,
          init,
        ),
      );
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
      for (const block of this.upBlocks.items) h = block.forward(h);
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

  /** Images [N, C, H, W] in [-1, 1] (H, W divisible by 2^(levels-1)) -> the latent distribution. */
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
      const moments = this.quantConv.forward(this.encoder.forward(x));
      const [mean, rawLogvar] = split(moments, [this.config.latentChannels, this.config.latentChannels], 1);
      return { mean, logvar: clampTensor(rawLogvar, -30, 20) };
    });
  }

  /** Latents [N, latent, h, w] (already divided by scaling_factor) -> images [N, out, h * 2^(levels-1), ...]. */
  decode(z: Tensor): Tensor {
    if (z.rank !== 4 || z.shape[1] !== this.config.latentChannels) {
      throw new OpError("AutoencoderKL.decode", `expects [N, ${this.config.latentChannels}, h, w]`, { z });
    }
    return tidy(() => this.decoder.forward(this.postQuantConv.forward(z)));
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
