/**
 * diffusers' UNet2DConditionModel in its layout and parameter names, on our kernels:
 *
 *   conv_in -> down_blocks.N (resnets.M, attentions.M, downsamplers.0.conv) -> mid_block (resnets.0,
 *   attentions.0, resnets.1) -> up_blocks.N (resnets.M on [h, skip] concatenated, attentions.M,
 *   upsamplers.0.conv) -> conv_norm_out -> SiLU -> conv_out,
 *
 * with the sinusoidal timestep embedding (time_proj, no parameters) -> time_embedding.linear_1 ->
 * SiLU -> time_embedding.linear_2 added into every residual block through its time_emb_proj.
 * Residual blocks (ResnetBlock2D): norm1 -> SiLU -> conv1 (+ time_emb_proj(SiLU(temb))) -> norm2 ->
 * SiLU -> conv2, plus the input (through a 1x1 conv_shortcut when the channels change).
 * Attentions (Transformer2DModel): GroupNorm(eps 1e-6) -> proj_in (linear or 1x1 conv) ->
 * transformer_blocks.K (BasicTransformerBlock: norm1 -> attn1 self-attention, norm2 -> attn2
 * cross-attention to the text tokens, norm3 -> ff: GEGLU net.0.proj, net.2) -> proj_out, plus the input.
 * Self- and cross-attention run on the fused attention kernel.
 *
 * The residual block, the up/downsamplers and the down/up block loops also build the VAE
 * (pretrained/vae.ts: DownEncoderBlock2D / UpDecoderBlock2D), as in diffusers: without a time
 * embedding (temb_channels=None: no time_emb_proj parameter), without attentions, and (decoder) without
 * skip connections.
 */
import {
  add,
  Conv2d,
  Attention as CrossAttention,
  cast,
  concat,
  type Gpu,
  GroupNorm,
  gelu,
  isGradEnabled,
  LayerNorm,
  Linear,
  Module,
  ModuleList,
  mul,
  OpError,
  type ParameterInit,
  permute,
  reshape,
  silu,
  split,
  Tensor,
  tidy,
  timestepEmbedding,
  timestepFrequencies,
  upsampleNearest,
} from "@cxr/kernels";
import { headsPerLevel, type UNetConfig } from "./config.ts";

/** Eps of the GroupNorm in front of each transformer (hard-coded 1e-6 in diffusers' Transformer2DModel). */
export const TRANSFORMER_NORM_EPS = 1e-6;

/**
 * `tidy(fn)` when nothing is being recorded (inference under noGrad): the block's intermediates are
 * released as it returns, which bounds the memory of a 512 px pass. While recording, ops keep
 * statistics for backward that are not on the tape as tensors with gradients (e.g. GroupNorm's mean
 * and rstd), so nothing may be released then.
 */
export function inferenceTidy<T>(fn: () => T): T {
  return isGradEnabled() ? fn() : tidy(fn);
}

/** A module without parameters that keeps PyTorch's list indices (nn.Dropout at ff.net.1). */
class Dropout extends Module {}

/**
 * diffusers' ResnetBlock2D. With `tembChannels` null (diffusers' temb_channels=None, the VAE's blocks)
 * there is no time_emb_proj and `forward` takes no time embedding.
 */
export class ResnetBlock2D extends Module {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly timeEmbProj: Linear | null;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly convShortcut: Conv2d | null;

  constructor(
    gpu: Gpu,
    readonly inChannels: number,
    readonly outChannels: number,
    tembChannels: number | null,
    groups: number,
    eps: number,
    init: ParameterInit,
  ) {
    super(gpu);
    this.norm1 = this.child("norm1", new GroupNorm(gpu, groups, inChannels, eps));
    this.conv1 = this.child("conv1", new Conv2d(gpu, inChannels, outChannels, 3, init, { padding: 1 }));
    this.timeEmbProj =
      tembChannels === null
        ? null
        : this.child("time_emb_proj", new Linear(gpu, tembChannels, outChannels, init));
    this.norm2 = this.child("norm2", new GroupNorm(gpu, groups, outChannels, eps));
    this.conv2 = this.child("conv2", new Conv2d(gpu, outChannels, outChannels, 3, init, { padding: 1 }));
    this.convShortcut =
      inChannels === outChannels
        ? null
        : this.child("conv_shortcut", new Conv2d(gpu, inChannels, outChannels, 1, init));
  }

  /**
   * x [B, C, H, W]; tembActivated = SiLU(temb) [B, T] when the block has a time_emb_proj, else null.
   * Intermediates not on the autograd tape (inference) are released as the block returns.
   */
  forward(x: Tensor, tembActivated: Tensor | null = null): Tensor {
    const projection = this.timeEmbProj;
    if ((projection === null) !== (tembActivated === null)) {
      throw new OpError(
        "ResnetBlock2D",
        projection
          ? "this block needs a time embedding"
          : "this block has no time_emb_proj (temb_channels=None)",
        { x },
      );
    }
    return inferenceTidy(() => {
      let h = this.conv1.forward(silu(this.norm1.forward(x)));
      if (projection && tembActivated) {
        const t = projection.forward(tembActivated); // [B, out]
        h = add(h, reshape(t, [t.shape[0], this.outChannels, 1, 1]));
      }
      h = this.conv2.forward(silu(this.norm2.forward(h)));
      const shortcut = this.convShortcut ? this.convShortcut.forward(x) : x;
      return add(shortcut, h);
    });
  }
}

/** diffusers' GEGLU: proj -> [hidden | gate] -> hidden * gelu(gate) (exact erf GELU). */
class Geglu extends Module {
  readonly proj: Linear;
  constructor(
    gpu: Gpu,
    dim: number,
    readonly inner: number,
    init: ParameterInit,
  ) {
    super(gpu);
    this.proj = this.child("proj", new Linear(gpu, dim, 2 * inner, init));
  }
  forward(x: Tensor): Tensor {
    const projected = this.proj.forward(x);
    const [hidden, gate] = split(projected, [this.inner, this.inner], projected.rank - 1);
    return mul(hidden, gelu(gate));
  }
}

/** diffusers' FeedForward with GEGLU, mult 4: net.0 (GEGLU), net.1 (dropout), net.2 (Linear). */
class FeedForward extends Module {
  readonly geglu: Geglu;
  readonly out: Linear;
  constructor(gpu: Gpu, dim: number, init: ParameterInit) {
    super(gpu);
    const net = this.child("net", new ModuleList<Module>(gpu));
    this.geglu = new Geglu(gpu, dim, 4 * dim, init);
    this.out = new Linear(gpu, 4 * dim, dim, init);
    net.push(this.geglu);
    net.push(new Dropout(gpu));
    net.push(this.out);
  }
  forward(x: Tensor): Tensor {
    return this.out.forward(this.geglu.forward(x));
  }
}

export class BasicTransformerBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attn1: CrossAttention;
  readonly norm2: LayerNorm;
  readonly attn2: CrossAttention;
  readonly norm3: LayerNorm;
  readonly ff: FeedForward;
  constructor(
    gpu: Gpu,
    dim: number,
    heads: number,
    headDim: number,
    contextDim: number,
    init: ParameterInit,
  ) {
    super(gpu);
    this.norm1 = this.child("norm1", new LayerNorm(gpu, dim));
    this.attn1 = this.child("attn1", new CrossAttention(gpu, dim, init, { heads, headDim }));
    this.norm2 = this.child("norm2", new LayerNorm(gpu, dim));
    this.attn2 = this.child("attn2", new CrossAttention(gpu, dim, init, { heads, headDim, contextDim }));
    this.norm3 = this.child("norm3", new LayerNorm(gpu, dim));
    this.ff = this.child("ff", new FeedForward(gpu, dim, init));
  }
  /** x [B, HW, dim], context [B, L, contextDim]. */
  forward(x: Tensor, context: Tensor): Tensor {
    let h = add(x, this.attn1.forward(this.norm1.forward(x)));
    h = add(h, this.attn2.forward(this.norm2.forward(h), context));
    return add(h, this.ff.forward(this.norm3.forward(h)));
  }
}

/** diffusers' Transformer2DModel (continuous input). */
export class Transformer2DModel extends Module {
  readonly norm: GroupNorm;
  readonly projIn: Linear | Conv2d;
  readonly blocks: ModuleList<BasicTransformerBlock>;
  readonly projOut: Linear | Conv2d;
  readonly inner: number;

  constructor(
    gpu: Gpu,
    readonly channels: number,
    heads: number,
    contextDim: number,
    groups: number,
    readonly linearProjection: boolean,
    layers: number,
    init: ParameterInit,
  ) {
    super(gpu);
    const headDim = Math.floor(channels / heads);
    this.inner = heads * headDim;
    this.norm = this.child("norm", new GroupNorm(gpu, groups, channels, TRANSFORMER_NORM_EPS));
    this.projIn = this.child(
      "proj_in",
      linearProjection
        ? new Linear(gpu, channels, this.inner, init)
        : new Conv2d(gpu, channels, this.inner, 1, init),
    );
    this.blocks = this.child("transformer_blocks", new ModuleList<BasicTransformerBlock>(gpu));
    for (let index = 0; index < layers; index++) {
      this.blocks.push(new BasicTransformerBlock(gpu, this.inner, heads, headDim, contextDim, init));
    }
    this.projOut = this.child(
      "proj_out",
      linearProjection
        ? new Linear(gpu, this.inner, channels, init)
        : new Conv2d(gpu, this.inner, channels, 1, init),
    );
  }

  forward(x: Tensor, context: Tensor): Tensor {
    const [batch, channels, height, width] = x.shape;
    const normed = this.norm.forward(x);
    const tokens = (t: Tensor, dim: number) =>
      reshape(permute(t, [0, 2, 3, 1]), [batch, height * width, dim]);
    const image = (t: Tensor, dim: number) => permute(reshape(t, [batch, height, width, dim]), [0, 3, 1, 2]);
    let h = this.linearProjection
      ? this.projIn.forward(tokens(normed, channels))
      : tokens(this.projIn.forward(normed), this.inner);
    for (const block of this.blocks.items) h = block.forward(h, context);
    const out = this.linearProjection
      ? image(this.projOut.forward(h), channels)
      : this.projOut.forward(image(h, this.inner));
    return add(out, x);
  }
}

/**
 * diffusers' Downsample2D (use_conv): 3x3 conv with stride 2. With padding 0 (the VAE's, or a UNet
 * config's downsample_padding 0) diffusers first zero-pads one column right and one row bottom.
 */
export class Downsample2D extends Module {
  readonly conv: Conv2d;
  constructor(
    gpu: Gpu,
    channels: number,
    readonly padding: number,
    init: ParameterInit,
  ) {
    super(gpu);
    this.conv = this.child("conv", new Conv2d(gpu, channels, channels, 3, init, { stride: 2, padding }));
  }
  forward(x: Tensor): Tensor {
    if (this.padding !== 0) return this.conv.forward(x);
    return inferenceTidy(() => {
      const [n, c, h, w] = x.shape;
      const wider = concat([x, Tensor.zeros(this.gpu, [n, c, h, 1], x.dtype)], 3);
      return this.conv.forward(concat([wider, Tensor.zeros(this.gpu, [n, c, 1, w + 1], x.dtype)], 2));
    });
  }
}

/** diffusers' Upsample2D (use_conv): nearest x2, then 3x3 conv. */
export class Upsample2D extends Module {
  readonly conv: Conv2d;
  constructor(gpu: Gpu, channels: number, init: ParameterInit) {
    super(gpu);
    this.conv = this.child("conv", new Conv2d(gpu, channels, channels, 3, init, { padding: 1 }));
  }
  forward(x: Tensor): Tensor {
    return inferenceTidy(() => this.conv.forward(upsampleNearest(x, 2)));
  }
}

/** The transformers of a cross-attention level (Transformer2DModel's settings). */
export interface CrossAttentionSpec {
  heads: number;
  contextDim: number;
  linearProjection: boolean;
  transformerLayers: number;
}

/** What a down or up block holds: diffusers' block arguments. */
export interface BlockSpec {
  outChannels: number;
  /** Residual blocks in the block. */
  layers: number;
  /** Width of the time embedding; null: no time_emb_proj (the VAE). */
  tembChannels: number | null;
  groups: number;
  eps: number;
  /** Transformer after each resnet (Cross-attention blocks); null: none. */
  attention: CrossAttentionSpec | null;
}

function crossAttentionSpec(
  config: UNetConfig,
  heads: number,
  crossAttention: boolean,
): CrossAttentionSpec | null {
  return crossAttention
    ? {
        heads,
        contextDim: config.crossAttentionDim,
        linearProjection: config.useLinearProjection,
        transformerLayers: config.transformerLayersPerBlock,
      }
    : null;
}

function transformerFor(gpu: Gpu, spec: BlockSpec, attention: CrossAttentionSpec, init: ParameterInit) {
  return new Transformer2DModel(
    gpu,
    spec.outChannels,
    attention.heads,
    attention.contextDim,
    spec.groups,
    attention.linearProjection,
    attention.transformerLayers,
    init,
  );
}

/**
 * DownBlock2D / CrossAttnDownBlock2D (the UNet) and DownEncoderBlock2D (the VAE: no time embedding,
 * no attentions, downsampler padding 0).
 */
export class DownBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Transformer2DModel> | null;
  readonly downsampler: Downsample2D | null;
  constructor(
    gpu: Gpu,
    inChannels: number,
    spec: BlockSpec,
    /** Padding of the downsampler's conv (diffusers' downsample_padding); null: no downsampler. */
    downsamplePadding: number | null,
    init: ParameterInit,
  ) {
    super(gpu);
    const { outChannels, attention } = spec;
    this.resnets = this.child("resnets", new ModuleList<ResnetBlock2D>(gpu));
    this.attentions = attention ? this.child("attentions", new ModuleList<Transformer2DModel>(gpu)) : null;
    for (let layer = 0; layer < spec.layers; layer++) {
      const input = layer === 0 ? inChannels : outChannels;
      this.resnets.push(
        new ResnetBlock2D(gpu, input, outChannels, spec.tembChannels, spec.groups, spec.eps, init),
      );
      if (attention) this.attentions?.push(transformerFor(gpu, spec, attention, init));
    }
    this.downsampler = null;
    if (downsamplePadding !== null) {
      const list = this.child("downsamplers", new ModuleList<Downsample2D>(gpu));
      this.downsampler = list.push(new Downsample2D(gpu, outChannels, downsamplePadding, init));
    }
  }

  /**
   * Returns the output and the states the UNet's up path concatenates (one per resnet, one per
   * downsampler). `temb` and `context` are null for blocks without a time embedding / attentions.
   */
  forward(
    x: Tensor,
    temb: Tensor | null = null,
    context: Tensor | null = null,
  ): { output: Tensor; states: Tensor[] } {
    const states: Tensor[] = [];
    let h = x;
    this.resnets.items.forEach((resnet, index) => {
      h = resnet.forward(h, temb);
      if (this.attentions) h = this.attentions.items[index].forward(h, needContext(context));
      states.push(h);
    });
    if (this.downsampler) {
      h = this.downsampler.forward(h);
      states.push(h);
    }
    return { output: h, states };
  }
}

function needContext(context: Tensor | null): Tensor {
  if (!context) throw new OpError("UNet block", "a cross-attention block needs the text context");
  return context;
}

/** UNetMidBlock2DCrossAttn: resnet, (attention, resnet) per layer (one layer in SD). */
export class MidBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Transformer2DModel>;
  constructor(
    gpu: Gpu,
    config: UNetConfig,
    channels: number,
    temb: number,
    heads: number,
    init: ParameterInit,
  ) {
    super(gpu);
    this.resnets = this.child("resnets", new ModuleList<ResnetBlock2D>(gpu));
    this.attentions = this.child("attentions", new ModuleList<Transformer2DModel>(gpu));
    this.resnets.push(
      new ResnetBlock2D(gpu, channels, channels, temb, config.normNumGroups, config.normEps, init),
    );
    this.attentions.push(
      new Transformer2DModel(
        gpu,
        channels,
        heads,
        config.crossAttentionDim,
        config.normNumGroups,
        config.useLinearProjection,
        config.transformerLayersPerBlock,
        init,
      ),
    );
    this.resnets.push(
      new ResnetBlock2D(gpu, channels, channels, temb, config.normNumGroups, config.normEps, init),
    );
  }
  forward(x: Tensor, temb: Tensor, context: Tensor): Tensor {
    let h = this.resnets.items[0].forward(x, temb);
    h = this.attentions.items[0].forward(h, context);
    return this.resnets.items[1].forward(h, temb);
  }
}

/**
 * UpBlock2D / CrossAttnUpBlock2D (the UNet: each resnet on [h, skip] concatenated) and
 * UpDecoderBlock2D (the VAE: `skipChannels` null, no time embedding, no attentions).
 */
export class UpBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Transformer2DModel> | null;
  readonly upsampler: Upsample2D | null;
  readonly skipConnections: boolean;
  constructor(
    gpu: Gpu,
    prevOutputChannels: number,
    /** Channels of the skip states: of the level's input (last resnet) and output; null: no skips. */
    skipChannels: { inChannels: number } | null,
    spec: BlockSpec,
    addUpsample: boolean,
    init: ParameterInit,
  ) {
    super(gpu);
    const { outChannels, attention, layers } = spec;
    this.skipConnections = skipChannels !== null;
    this.resnets = this.child("resnets", new ModuleList<ResnetBlock2D>(gpu));
    this.attentions = attention ? this.child("attentions", new ModuleList<Transformer2DModel>(gpu)) : null;
    for (let layer = 0; layer < layers; layer++) {
      const skip = skipChannels === null ? 0 : layer === layers - 1 ? skipChannels.inChannels : outChannels;
      const input = layer === 0 ? prevOutputChannels : outChannels;
      this.resnets.push(
        new ResnetBlock2D(gpu, input + skip, outChannels, spec.tembChannels, spec.groups, spec.eps, init),
      );
      if (attention) this.attentions?.push(transformerFor(gpu, spec, attention, init));
    }
    this.upsampler = null;
    if (addUpsample) {
      const list = this.child("upsamplers", new ModuleList<Upsample2D>(gpu));
      this.upsampler = list.push(new Upsample2D(gpu, outChannels, init));
    }
  }

  /** `skips` are consumed from the end (the most recent down-path state first); null without skips. */
  forward(
    x: Tensor,
    skips: Tensor[] | null = null,
    temb: Tensor | null = null,
    context: Tensor | null = null,
  ): Tensor {
    if (this.skipConnections !== (skips !== null)) {
      throw new OpError("UpBlock", this.skipConnections ? "needs the skip states" : "takes no skip states");
    }
    let h = x;
    this.resnets.items.forEach((resnet, index) => {
      if (skips) {
        const skip = skips.pop();
        if (!skip) throw new OpError("UNet2DConditionModel", "ran out of skip connections (internal)");
        h = resnet.forward(concat([h, skip], 1), temb);
      } else {
        h = resnet.forward(h, temb);
      }
      if (this.attentions) h = this.attentions.items[index].forward(h, needContext(context));
    });
    return this.upsampler ? this.upsampler.forward(h) : h;
  }
}

class TimestepEmbedding extends Module {
  readonly linear1: Linear;
  readonly linear2: Linear;
  constructor(gpu: Gpu, inChannels: number, timeEmbedDim: number, init: ParameterInit) {
    super(gpu);
    this.linear1 = this.child("linear_1", new Linear(gpu, inChannels, timeEmbedDim, init));
    this.linear2 = this.child("linear_2", new Linear(gpu, timeEmbedDim, timeEmbedDim, init));
  }
  forward(x: Tensor): Tensor {
    return this.linear2.forward(silu(this.linear1.forward(x)));
  }
}

export class UNet2DConditionModel extends Module {
  readonly convIn: Conv2d;
  readonly timeEmbedding: TimestepEmbedding;
  readonly downBlocks: ModuleList<DownBlock>;
  readonly midBlock: MidBlock;
  readonly upBlocks: ModuleList<UpBlock>;
  readonly convNormOut: GroupNorm;
  readonly convOut: Conv2d;
  /** f32 frequencies of time_proj, kept on the GPU (a constant, not state). */
  private readonly frequencies: Tensor;

  constructor(
    gpu: Gpu,
    readonly config: UNetConfig,
    init: ParameterInit,
  ) {
    super(gpu);
    const channels = config.blockOutChannels;
    const levels = channels.length;
    const heads = headsPerLevel(config);
    const timeInput = channels[0];
    const temb = 4 * channels[0];
    this.frequencies = Tensor.upload(gpu, timestepFrequencies(timeInput, this.timeOptions()), [
      Math.floor(timeInput / 2),
    ]).retain();
    this.convIn = this.child(
      "conv_in",
      new Conv2d(gpu, config.inChannels, channels[0], 3, init, { padding: 1 }),
    );
    this.timeEmbedding = this.child("time_embedding", new TimestepEmbedding(gpu, timeInput, temb, init));

    this.downBlocks = this.child("down_blocks", new ModuleList<DownBlock>(gpu));
    let output = channels[0];
    for (let level = 0; level < levels; level++) {
      const input = output;
      output = channels[level];
      const spec: BlockSpec = {
        outChannels: output,
        layers: config.layersPerBlock,
        tembChannels: temb,
        groups: config.normNumGroups,
        eps: config.normEps,
        attention: crossAttentionSpec(
          config,
          heads[level],
          config.downBlockTypes[level] === "CrossAttnDownBlock2D",
        ),
      };
      this.downBlocks.push(
        new DownBlock(gpu, input, spec, level < levels - 1 ? config.downsamplePadding : null, init),
      );
    }

    this.midBlock = this.child(
      "mid_block",
      new MidBlock(gpu, config, channels[levels - 1], temb, heads[levels - 1], init),
    );

    this.upBlocks = this.child("up_blocks", new ModuleList<UpBlock>(gpu));
    const reversed = [...channels].reverse();
    const reversedHeads = [...heads].reverse();
    output = reversed[0];
    for (let index = 0; index < levels; index++) {
      const previous = output;
      output = reversed[index];
      const input = reversed[Math.min(index + 1, levels - 1)];
      const spec: BlockSpec = {
        outChannels: output,
        layers: config.layersPerBlock + 1,
        tembChannels: temb,
        groups: config.normNumGroups,
        eps: config.normEps,
        attention: crossAttentionSpec(
          config,
          reversedHeads[index],
          config.upBlockTypes[index] === "CrossAttnUpBlock2D",
        ),
      };
      this.upBlocks.push(new UpBlock(gpu, previous, { inChannels: input }, spec, index < levels - 1, init));
    }

    this.convNormOut = this.child(
      "conv_norm_out",
      new GroupNorm(gpu, config.normNumGroups, channels[0], config.normEps),
    );
    this.convOut = this.child(
      "conv_out",
      new Conv2d(gpu, channels[0], config.outChannels, 3, init, { padding: 1 }),
    );
  }

  private timeOptions() {
    return { flipSinToCos: this.config.flipSinToCos, downscaleFreqShift: this.config.freqShift };
  }

  /** The dtype of the weights: "f16" when built inside `withParameterDtype("f16", ...)`. */
  get precision(): "f32" | "f16" {
    return this.convIn.weight.dtype === "f16" ? "f16" : "f32";
  }

  /**
   * sample [B, inChannels, H, W] (H, W divisible by 2^(levels-1)), timesteps f32 [B],
   * encoderHiddenStates [B, L, crossAttentionDim] -> [B, outChannels, H, W].
   * With f16 weights (`precision` "f16", inference only) the f32 sample and text states are cast to
   * f16 on the way in, the sinusoidal timestep embedding is computed in f32 and cast, every layer runs
   * its f16 kernels (f32 arithmetic inside), and the output is cast back: f32 in, f32 out.
   */
  forward(sample: Tensor, timesteps: Tensor, encoderHiddenStates: Tensor): Tensor {
    if (this.precision === "f32") return this.forwardIn(sample, timesteps, encoderHiddenStates);
    const temporaries: Tensor[] = [];
    const half = (t: Tensor) => {
      if (t.dtype === "f16") return t;
      const converted = cast(t, "f16");
      temporaries.push(converted);
      return converted;
    };
    // Releasing behind queued work is safe (queue order); nothing is on a tape in f16.
    try {
      const output = this.forwardIn(half(sample), timesteps, half(encoderHiddenStates));
      const result = cast(output, "f32");
      output.release();
      return result;
    } finally {
      for (const tensor of temporaries) tensor.release();
    }
  }

  private forwardIn(sample: Tensor, timesteps: Tensor, encoderHiddenStates: Tensor): Tensor {
    const { config } = this;
    const levels = config.blockOutChannels.length;
    const [batch, inChannels, height, width] = sample.rank === 4 ? sample.shape : [0, 0, 0, 0];
    const factor = 2 ** (levels - 1);
    if (
      sample.rank !== 4 ||
      inChannels !== config.inChannels ||
      height % factor !== 0 ||
      width % factor !== 0
    ) {
      throw new OpError(
        "UNet2DConditionModel",
        `sample must be [batch, ${config.inChannels}, H, W] with H and W divisible by ${factor}`,
        { sample },
      );
    }
    if (timesteps.rank !== 1 || timesteps.shape[0] !== batch || timesteps.dtype !== "f32") {
      throw new OpError("UNet2DConditionModel", `timesteps must be an f32 tensor [${batch}]`, {
        sample,
        timesteps,
      });
    }
    const context = encoderHiddenStates;
    if (context.rank !== 3 || context.shape[0] !== batch || context.shape[2] !== config.crossAttentionDim) {
      throw new OpError(
        "UNet2DConditionModel",
        `encoderHiddenStates must be [${batch}, tokens, ${config.crossAttentionDim}]`,
        { sample, encoderHiddenStates },
      );
    }
    const sinusoids = timestepEmbedding(
      timesteps,
      config.blockOutChannels[0],
      this.timeOptions(),
      this.frequencies,
    );
    // timestepEmbedding has no f16 variant (arguments up to ~1000 radians): f32, then cast.
    const projected = sample.dtype === "f16" ? cast(sinusoids, "f16") : sinusoids;
    if (projected !== sinusoids) sinusoids.release();
    const hidden = this.timeEmbedding.linear1.forward(projected);
    // The sinusoids are not on the tape (timesteps need no gradient), so backward() would never free
    // them: hand them to linear_1's node, which releases its saved tensors after its backward. Without
    // a tape (inference) nothing reads them after linear_1 (releasing behind queued work is safe).
    if (projected.node === null && !timesteps.requiresGrad) {
      if (hidden.node) hidden.node.saved.push(projected);
      else projected.release();
    }
    // Every resnet applies SiLU to the time embedding before its time_emb_proj: done once here.
    const temb = silu(this.timeEmbedding.linear2.forward(silu(hidden)));

    let h = this.convIn.forward(sample);
    const skips: Tensor[] = [h];
    for (const block of this.downBlocks.items) {
      const { output, states } = block.forward(h, temb, context);
      h = output;
      skips.push(...states);
    }
    h = this.midBlock.forward(h, temb, context);
    for (const block of this.upBlocks.items) h = block.forward(h, skips, temb, context);
    return this.convOut.forward(silu(this.convNormOut.forward(h)));
  }

  override dispose(): void {
    this.frequencies.retained = false;
    this.frequencies.release();
    super.dispose();
  }
}
