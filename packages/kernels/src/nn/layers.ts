/**
 * The layers a Stable-Diffusion UNet, a CLIP text encoder and a DenseNet are built from, with
 * PyTorch's parameter names and initialisation (so checkpoints map 1:1, and training starts where
 * PyTorch's would in distribution).
 */
import { attention } from "../ops/attention/index.ts";
import { batchNorm2d } from "../ops/batchnorm/index.ts";
import { conv2d } from "../ops/conv2d/index.ts";
import { embedding } from "../ops/embedding/index.ts";
import { groupNorm } from "../ops/groupnorm/index.ts";
import { layerNorm } from "../ops/layernorm/index.ts";
import { permute, reshape } from "../ops/layout/index.ts";
import { matmul } from "../ops/matmul/index.ts";
import type { Gpu } from "../runtime/device.ts";
import { OpError, type Tensor } from "../runtime/tensor.ts";
import { Module, type ParameterInit } from "./module.ts";

const ones = (count: number) => new Float32Array(count).fill(1);
const zeros = (count: number) => new Float32Array(count);

/** y = x W^T + b over the last axis; weight [out, in]. */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(
    gpu: Gpu,
    readonly inFeatures: number,
    readonly outFeatures: number,
    init: ParameterInit,
    options: { bias?: boolean } = {},
  ) {
    super(gpu);
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = this.parameter(
      "weight",
      [outFeatures, inFeatures],
      init.uniform(outFeatures * inFeatures, bound),
    );
    this.bias =
      options.bias === false ? null : this.parameter("bias", [outFeatures], init.uniform(outFeatures, bound));
  }

  forward(x: Tensor): Tensor {
    if (x.shape[x.rank - 1] !== this.inFeatures) {
      throw new OpError("Linear", `expects last dimension ${this.inFeatures}`, { x, weight: this.weight });
    }
    return matmul(x, this.weight, { transposeB: true, bias: this.bias ?? undefined });
  }
}

export interface Conv2dLayerOptions {
  stride?: number;
  padding?: number;
  dilation?: number;
  groups?: number;
  bias?: boolean;
}

/** 2-D convolution over NCHW; weight [out, in / groups, k, k]. */
export class Conv2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  private readonly options: Required<Omit<Conv2dLayerOptions, "bias">>;

  constructor(
    gpu: Gpu,
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    init: ParameterInit,
    options: Conv2dLayerOptions = {},
  ) {
    super(gpu);
    const groups = options.groups ?? 1;
    if (inChannels % groups !== 0 || outChannels % groups !== 0) {
      throw new OpError(
        "Conv2d",
        `channels ${inChannels} -> ${outChannels} are not divisible by groups ${groups}`,
      );
    }
    const fanIn = (inChannels / groups) * kernelSize * kernelSize;
    const bound = 1 / Math.sqrt(fanIn);
    const shape = [outChannels, inChannels / groups, kernelSize, kernelSize];
    this.weight = this.parameter("weight", shape, init.uniform(outChannels * fanIn, bound));
    this.bias =
      options.bias === false ? null : this.parameter("bias", [outChannels], init.uniform(outChannels, bound));
    this.options = {
      stride: options.stride ?? 1,
      padding: options.padding ?? 0,
      dilation: options.dilation ?? 1,
      groups,
    };
  }

  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, this.options);
  }
}

/** Group normalisation over [N, C, ...] (Stable Diffusion: 32 groups). */
export class GroupNorm extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(
    gpu: Gpu,
    readonly groups: number,
    readonly channels: number,
    readonly eps = 1e-5,
  ) {
    super(gpu);
    if (channels % groups !== 0)
      throw new OpError("GroupNorm", `${channels} channels are not divisible by ${groups} groups`);
    this.weight = this.parameter("weight", [channels], ones(channels));
    this.bias = this.parameter("bias", [channels], zeros(channels));
  }
  forward(x: Tensor): Tensor {
    return groupNorm(x, this.groups, this.weight, this.bias, this.eps);
  }
}

/** Batch normalisation over [N, C, H, W] with running statistics (DenseNet). */
export class BatchNorm2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  constructor(
    gpu: Gpu,
    readonly channels: number,
    readonly options: { momentum?: number; eps?: number } = {},
  ) {
    super(gpu);
    this.weight = this.parameter("weight", [channels], ones(channels));
    this.bias = this.parameter("bias", [channels], zeros(channels));
    this.runningMean = this.buffer("running_mean", [channels], zeros(channels));
    this.runningVar = this.buffer("running_var", [channels], ones(channels));
  }
  forward(x: Tensor): Tensor {
    return batchNorm2d(x, this.weight, this.bias, this.runningMean, this.runningVar, {
      training: this.training,
      momentum: this.options.momentum ?? 0.1,
      eps: this.options.eps ?? 1e-5,
    });
  }
}

/** Layer normalisation over the last axis (CLIP, transformer blocks). */
export class LayerNorm extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(
    gpu: Gpu,
    readonly dim: number,
    readonly eps = 1e-5,
  ) {
    super(gpu);
    this.weight = this.parameter("weight", [dim], ones(dim));
    this.bias = this.parameter("bias", [dim], zeros(dim));
  }
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/** Token embedding table [vocabulary, dim], initialised N(0, 1) like PyTorch. */
export class Embedding extends Module {
  readonly weight: Tensor;
  constructor(
    gpu: Gpu,
    readonly vocabulary: number,
    readonly dim: number,
    init: ParameterInit,
  ) {
    super(gpu);
    this.weight = this.parameter("weight", [vocabulary, dim], init.normal(vocabulary * dim, 1));
  }
  /** tokens: u32 tensor of ids, any shape. */
  forward(tokens: Tensor): Tensor {
    return embedding(this.weight, tokens);
  }
}

export interface AttentionOptions {
  heads: number;
  headDim: number;
  /** Width of the context for cross-attention; defaults to the query width (self-attention). */
  contextDim?: number;
}

/**
 * Multi-head attention with diffusers' names: to_q, to_k, to_v (no bias), to_out.0 (with bias).
 * x [B, L, queryDim], context [B, Lk, contextDim] (omit for self-attention), keyMask [B, Lk].
 */
export class Attention extends Module {
  readonly toQuery: Linear;
  readonly toKey: Linear;
  readonly toValue: Linear;
  readonly toOut: Linear;
  readonly heads: number;
  readonly headDim: number;

  constructor(
    gpu: Gpu,
    readonly queryDim: number,
    init: ParameterInit,
    options: AttentionOptions,
  ) {
    super(gpu);
    this.heads = options.heads;
    this.headDim = options.headDim;
    const inner = options.heads * options.headDim;
    const contextDim = options.contextDim ?? queryDim;
    this.toQuery = this.child("to_q", new Linear(gpu, queryDim, inner, init, { bias: false }));
    this.toKey = this.child("to_k", new Linear(gpu, contextDim, inner, init, { bias: false }));
    this.toValue = this.child("to_v", new Linear(gpu, contextDim, inner, init, { bias: false }));
    const out = this.child("to_out", new OutputProjection(gpu));
    this.toOut = out.add(new Linear(gpu, inner, queryDim, init));
  }

  private splitHeads(x: Tensor): Tensor {
    const [batch, length] = x.shape;
    const grouped = reshape(x, [batch, length, this.heads, this.headDim]);
    return permute(grouped, [0, 2, 1, 3]);
  }

  forward(x: Tensor, context?: Tensor, keyMask?: Tensor): Tensor {
    if (x.rank !== 3) throw new OpError("Attention", "expects x as [batch, tokens, channels]", { x });
    const source = context ?? x;
    const q = this.splitHeads(this.toQuery.forward(x));
    const k = this.splitHeads(this.toKey.forward(source));
    const v = this.splitHeads(this.toValue.forward(source));
    const attended = attention(q, k, v, keyMask ? { keyMask } : {});
    const [batch, length] = x.shape;
    const merged = reshape(permute(attended, [0, 2, 1, 3]), [batch, length, this.heads * this.headDim]);
    return this.toOut.forward(merged);
  }
}

/** diffusers wraps the output projection in a list ("to_out.0"); this keeps that name. */
class OutputProjection extends Module {
  add(linear: Linear): Linear {
    return this.child("0", linear);
  }
}
