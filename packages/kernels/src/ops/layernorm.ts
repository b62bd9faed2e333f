/**
 * Layer normalisation over the last axis (Ba et al. 2016), as the UNet's transformer blocks and the
 * CLIP text encoder use it: x [..., D] normalised per row of D by its mean and biased variance, then
 * scaled and shifted per column by gamma, beta [D].
 *
 * Forward: the shared moments kernels (rows split into chunks when D is large) and a normalise kernel.
 * Backward: per-row sums of gamma * dy and gamma * dy * x̂, then dx; gamma/beta gradients are column
 * sums over rows, split into row blocks and finished by a small kernel.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import type { Gpu } from "../runtime/device.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { OpError, type Shape, sizeOf, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";
import {
  type AccessStyle,
  accessStyleOf,
  checkEps,
  chooseMomentsVariant,
  lanesFor,
  loadsPerInvocation,
  type MomentsVariant,
  momentStatistics,
  type NormVariantOptions,
  rowSplit,
} from "./norm-core/index.ts";

export type LayerNormVariant = MomentsVariant;

export function chooseLayerNormVariant(gpu: Gpu, _shape: Shape): LayerNormVariant {
  return chooseMomentsVariant(gpu);
}

const VECTOR_TYPES = {
  4: { vector: "vec4<f32>", horizontalSum: "v.x + v.y + v.z + v.w" },
  1: { vector: "f32", horizontalSum: "v" },
} as const;

// x is [rows, rowUnits] in loads of 1 or 4 floats. Access patterns as in group norm (AccessStyle):
// elementwise kernels take a contiguous range of `perInvocation` loads (crossing rows), row sums take
// (row, chunk) invocations with a contiguous (CPU) or interleaved (GPU) chunk.

const LAYER_NORMALIZE_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<{{vector}}>;
@group(0) @binding(3) var<storage, read> beta: array<{{vector}}>;
@group(0) @binding(4) var<storage, read_write> y: array<{{vector}}>;
struct Params { totalUnits: u32, rowUnits: u32, perInvocation: u32, hasGamma: u32, hasBeta: u32 }
@group(0) @binding(5) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let begin = linearIndex(gid, groups, 64u) * params.perInvocation;
  if (begin >= params.totalUnits) { return; }
  let end = min(begin + params.perInvocation, params.totalUnits);
  var u = begin;
  while (u < end) {
    let row = u / params.rowUnits;
    let rowStart = row * params.rowUnits;
    let rowEnd = min(rowStart + params.rowUnits, end);
    let mean = stats[4u * row];
    let rstd = stats[4u * row + 1u];
    for (; u < rowEnd; u++) {
      var value = (x[u] - mean) * rstd;
      if (params.hasGamma == 1u) { value *= gamma[u - rowStart]; }
      if (params.hasBeta == 1u) { value += beta[u - rowStart]; }
      y[u] = value;
    }
  }
}`;

/** Per (row, chunk): Σ gamma * dy and Σ gamma * dy * x̂. */
const LAYER_NORM_ROW_SUMS_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read> gradOutput: array<{{vector}}>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<{{vector}}>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
struct Params { rows: u32, rowUnits: u32, chunks: u32, chunkStep: u32, unitStep: u32, span: u32, hasGamma: u32 }
@group(0) @binding(5) var<uniform> params: Params;
fn horizontalSum(v: {{vector}}) -> f32 { return {{horizontalSum}}; }
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.rows * params.chunks) { return; }
  let row = index / params.chunks;
  let mean = stats[4u * row];
  let rstd = stats[4u * row + 1u];
  let rowStart = row * params.rowUnits;
  var sumGrad = {{vector}}(0.0);
  var sumGradNormalized = {{vector}}(0.0);
  let begin = rowStart + (index % params.chunks) * params.chunkStep;
  let end = min(begin + params.span, rowStart + params.rowUnits);
  for (var u = begin; u < end; u += params.unitStep) {
    var g = gradOutput[u];
    if (params.hasGamma == 1u) { g *= gamma[u - rowStart]; }
    sumGrad += g;
    sumGradNormalized += g * (x[u] - mean);
  }
  partials[2u * index] = horizontalSum(sumGrad);
  partials[2u * index + 1u] = horizontalSum(sumGradNormalized) * rstd;
}`;

/** dx = rstd * (gamma * dy - mean(gamma * dy) - x̂ * mean(gamma * dy * x̂)), each row's chunks summed here. */
const LAYER_NORM_INPUT_GRADIENT_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read> gradOutput: array<{{vector}}>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<{{vector}}>;
@group(0) @binding(4) var<storage, read> partials: array<f32>;
@group(0) @binding(5) var<storage, read_write> gradInput: array<{{vector}}>;
struct Params { totalUnits: u32, rowUnits: u32, perInvocation: u32, chunks: u32, hasGamma: u32, rowLength: f32 }
@group(0) @binding(6) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let begin = linearIndex(gid, groups, 64u) * params.perInvocation;
  if (begin >= params.totalUnits) { return; }
  let end = min(begin + params.perInvocation, params.totalUnits);
  var u = begin;
  while (u < end) {
    let row = u / params.rowUnits;
    let rowStart = row * params.rowUnits;
    let rowEnd = min(rowStart + params.rowUnits, end);
    let mean = stats[4u * row];
    let rstd = stats[4u * row + 1u];
    var sumGrad = 0.0;
    var sumGradNormalized = 0.0;
    for (var j = row * params.chunks; j < (row + 1u) * params.chunks; j++) {
      sumGrad += partials[2u * j];
      sumGradNormalized += partials[2u * j + 1u];
    }
    let k1 = sumGrad / params.rowLength;
    let k2 = sumGradNormalized / params.rowLength;
    for (; u < rowEnd; u++) {
      var g = gradOutput[u];
      if (params.hasGamma == 1u) { g *= gamma[u - rowStart]; }
      let normalized = (x[u] - mean) * rstd;
      gradInput[u] = rstd * (g - k1 - normalized * k2);
    }
  }
}`;

/** Per (row block, column load): Σ dy * x̂ and Σ dy over the block's rows, into [blocks, 2, rowUnits]. */
const LAYER_NORM_COLUMN_SUMS_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read> gradOutput: array<{{vector}}>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<{{vector}}>;
struct Params { rows: u32, rowUnits: u32, blocks: u32, rowsPerBlock: u32 }
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.blocks * params.rowUnits) { return; }
  let block = index / params.rowUnits;
  let u = index % params.rowUnits;
  let firstRow = block * params.rowsPerBlock;
  let lastRow = min(firstRow + params.rowsPerBlock, params.rows);
  var sumGradNormalized = {{vector}}(0.0);
  var sumGrad = {{vector}}(0.0);
  for (var row = firstRow; row < lastRow; row++) {
    let g = gradOutput[row * params.rowUnits + u];
    sumGrad += g;
    sumGradNormalized += g * ((x[row * params.rowUnits + u] - stats[4u * row]) * stats[4u * row + 1u]);
  }
  partials[(2u * block) * params.rowUnits + u] = sumGradNormalized;
  partials[(2u * block + 1u) * params.rowUnits + u] = sumGrad;
}`;

const LAYER_NORM_PARAMETER_GRADIENTS_TEMPLATE = `
@group(0) @binding(0) var<storage, read> partials: array<{{vector}}>;
@group(0) @binding(1) var<storage, read_write> gradGamma: array<{{vector}}>;
@group(0) @binding(2) var<storage, read_write> gradBeta: array<{{vector}}>;
struct Params { rowUnits: u32, blocks: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let u = linearIndex(gid, groups, 64u);
  if (u >= params.rowUnits) { return; }
  var sumGradNormalized = {{vector}}(0.0);
  var sumGrad = {{vector}}(0.0);
  for (var block = 0u; block < params.blocks; block++) {
    sumGradNormalized += partials[(2u * block) * params.rowUnits + u];
    sumGrad += partials[(2u * block + 1u) * params.rowUnits + u];
  }
  gradGamma[u] = sumGradNormalized;
  gradBeta[u] = sumGrad;
}`;

export const layerNormalizeSource = (lanes: 4 | 1) => wgsl(LAYER_NORMALIZE_TEMPLATE, VECTOR_TYPES[lanes]);
export const layerNormRowSumsSource = (lanes: 4 | 1) =>
  wgsl(LAYER_NORM_ROW_SUMS_TEMPLATE, VECTOR_TYPES[lanes]);
export const layerNormInputGradientSource = (lanes: 4 | 1) =>
  wgsl(LAYER_NORM_INPUT_GRADIENT_TEMPLATE, VECTOR_TYPES[lanes]);
export const layerNormColumnSumsSource = (lanes: 4 | 1) =>
  wgsl(LAYER_NORM_COLUMN_SUMS_TEMPLATE, VECTOR_TYPES[lanes]);
export const layerNormParameterGradientsSource = (lanes: 4 | 1) =>
  wgsl(LAYER_NORM_PARAMETER_GRADIENTS_TEMPLATE, VECTOR_TYPES[lanes]);

export function layerNormCost(shape: Shape) {
  const size = sizeOf(shape);
  return { flops: 7 * size, bytes: 12 * size };
}

function checkParameter(op: string, name: string, parameter: Tensor | null, width: number, x: Tensor): void {
  if (!parameter) return;
  if (parameter.dtype !== "f32") {
    throw new OpError(op, `needs f32 ${name}, got ${parameter.dtype}`, { x, [name]: parameter });
  }
  if (parameter.rank !== 1 || parameter.size !== width) {
    throw new OpError(op, `${name} must have shape [${width}] (the last axis of x)`, {
      x,
      [name]: parameter,
    });
  }
}

/**
 * y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis of x [..., D];
 * gamma, beta: [D] or null (1 and 0). Differentiable in x, gamma and beta.
 */
export function layerNorm(
  x: Tensor,
  gamma: Tensor | null = null,
  beta: Tensor | null = null,
  eps = 1e-5,
  options: NormVariantOptions<LayerNormVariant> = {},
): Tensor {
  const op = "layerNorm";
  if (x.dtype !== "f32") throw new OpError(op, `needs f32 input, got ${x.dtype}`, { x });
  if (x.rank < 1) throw new OpError(op, "needs x of shape [..., D]", { x });
  const width = x.shape[x.rank - 1];
  checkParameter(op, "gamma", gamma, width, x);
  checkParameter(op, "beta", beta, width, x);
  checkEps(op, eps);
  const gpu = x.gpu;
  const variant = options.variant ?? chooseLayerNormVariant(gpu, x.shape);
  const rows = x.size / width;
  const stats = momentStatistics(
    op,
    x,
    rows,
    width,
    { statistics: rows, outer: 1, outerStride: 0 },
    eps,
    variant,
  );
  const lanes = lanesFor(width);
  const rowUnits = width / lanes;
  const style = accessStyleOf(gpu, variant);
  const perInvocation = loadsPerInvocation(style, rows * rowUnits);
  const y = Tensor.empty(gpu, x.shape);
  launch(
    gpu,
    { name: op, variant, code: layerNormalizeSource(lanes) },
    {
      bindings: [x, stats, gamma ?? x, beta ?? x, y],
      params: new Params().u32(rows * rowUnits, rowUnits, perInvocation, gamma ? 1 : 0, beta ? 1 : 0),
      workgroups: grid(Math.ceil((rows * rowUnits) / perInvocation), 64),
      flops: 3 * x.size,
      bytes: 8 * x.size,
    },
  );
  const inputs = [x, gamma, beta].filter((tensor): tensor is Tensor => tensor !== null);
  if (needsGrad(...inputs)) {
    record(
      op,
      inputs,
      [y],
      ([gradOutput]) => {
        const grads = layerNormBackward(x, gradOutput!, stats, gamma, beta, style);
        const result: (Tensor | null)[] = [grads.gradInput];
        if (gamma) result.push(grads.gradGamma);
        if (beta) result.push(grads.gradBeta);
        return result;
      },
      [stats],
    );
  } else {
    stats.release();
  }
  return y;
}

function layerNormBackward(
  x: Tensor,
  gradOutput: Tensor,
  stats: Tensor,
  gamma: Tensor | null,
  beta: Tensor | null,
  style: AccessStyle,
): { gradInput: Tensor | null; gradGamma: Tensor | null; gradBeta: Tensor | null } {
  const op = "layerNormBackward";
  const gpu = x.gpu;
  const width = x.shape[x.rank - 1];
  const rows = x.size / width;
  const lanes = lanesFor(width);
  const rowUnits = width / lanes;
  let gradInput: Tensor | null = null;
  let gradGamma: Tensor | null = null;
  let gradBeta: Tensor | null = null;
  if (x.requiresGrad) {
    const split = rowSplit(style, rows, rowUnits);
    const partials = Tensor.empty(gpu, [rows * split.chunks, 2]);
    launch(
      gpu,
      { name: op, variant: `row-sums-${style}`, code: layerNormRowSumsSource(lanes) },
      {
        bindings: [x, gradOutput, stats, gamma ?? x, partials],
        params: new Params().u32(
          rows,
          rowUnits,
          split.chunks,
          split.chunkStep,
          split.unitStep,
          split.span,
          gamma ? 1 : 0,
        ),
        workgroups: grid(rows * split.chunks, 64),
        flops: 5 * x.size,
        bytes: 8 * x.size,
      },
    );
    const perInvocation = loadsPerInvocation(style, rows * rowUnits);
    gradInput = Tensor.empty(gpu, x.shape);
    launch(
      gpu,
      { name: op, variant: `input-gradient-${style}`, code: layerNormInputGradientSource(lanes) },
      {
        bindings: [x, gradOutput, stats, gamma ?? x, partials, gradInput],
        params: new Params()
          .u32(rows * rowUnits, rowUnits, perInvocation, split.chunks, gamma ? 1 : 0)
          .f32(width),
        workgroups: grid(Math.ceil((rows * rowUnits) / perInvocation), 64),
        flops: 6 * x.size,
        bytes: 12 * x.size,
      },
    );
    partials.release();
  }
  const wantGamma = gamma?.requiresGrad ?? false;
  const wantBeta = beta?.requiresGrad ?? false;
  if (wantGamma || wantBeta) {
    // Enough blocks to fill the device, but about sqrt(rows) at most, so that neither the per-block
    // loop nor the final loop over blocks sums thousands of terms serially (f32 error grows with both).
    const target = gpu.kind === "cpu" ? 4096 : 65536;
    const blocks = Math.max(1, Math.min(rows, Math.ceil(target / rowUnits), Math.ceil(4 * Math.sqrt(rows))));
    const rowsPerBlock = Math.ceil(rows / blocks);
    const usedBlocks = Math.ceil(rows / rowsPerBlock);
    const partials = Tensor.empty(gpu, [usedBlocks, 2, width]);
    launch(
      gpu,
      { name: op, variant: "column-sums", code: layerNormColumnSumsSource(lanes) },
      {
        bindings: [x, gradOutput, stats, partials],
        params: new Params().u32(rows, rowUnits, usedBlocks, rowsPerBlock),
        workgroups: grid(usedBlocks * rowUnits, 64),
        flops: 4 * x.size,
        bytes: 8 * x.size,
      },
    );
    gradGamma = Tensor.empty(gpu, [width]);
    gradBeta = Tensor.empty(gpu, [width]);
    launch(
      gpu,
      { name: op, variant: "parameter-gradients", code: layerNormParameterGradientsSource(lanes) },
      {
        bindings: [partials, gradGamma, gradBeta],
        params: new Params().u32(rowUnits, usedBlocks),
        workgroups: grid(rowUnits, 64),
        flops: partials.size,
        bytes: 4 * partials.size + 8 * width,
      },
    );
    partials.release();
    if (!wantGamma) {
      gradGamma.release();
      gradGamma = null;
    }
    if (!wantBeta) {
      gradBeta.release();
      gradBeta = null;
    }
  }
  return { gradInput, gradGamma, gradBeta };
}

// ---------------------------------------------------------------------------------------------
// Float64 reference
// ---------------------------------------------------------------------------------------------

export const layerNormReference = {
  forward(
    x: Float64Array,
    width: number,
    gamma: Float64Array | null,
    beta: Float64Array | null,
    eps = 1e-5,
  ): { y: Float64Array; mean: Float64Array; rstd: Float64Array } {
    const rows = x.length / width;
    const y = new Float64Array(x.length);
    const mean = new Float64Array(rows);
    const rstd = new Float64Array(rows);
    for (let row = 0; row < rows; row++) {
      const start = row * width;
      let sum = 0;
      for (let d = 0; d < width; d++) sum += x[start + d];
      const mu = sum / width;
      let squares = 0;
      for (let d = 0; d < width; d++) squares += (x[start + d] - mu) ** 2;
      const r = 1 / Math.sqrt(squares / width + eps);
      mean[row] = mu;
      rstd[row] = r;
      for (let d = 0; d < width; d++) {
        y[start + d] = (x[start + d] - mu) * r * (gamma ? gamma[d] : 1) + (beta ? beta[d] : 0);
      }
    }
    return { y, mean, rstd };
  },
  backward(
    x: Float64Array,
    width: number,
    gamma: Float64Array | null,
    gradOutput: Float64Array,
    eps = 1e-5,
  ): { gradInput: Float64Array; gradGamma: Float64Array; gradBeta: Float64Array } {
    const rows = x.length / width;
    const { mean, rstd } = layerNormReference.forward(x, width, gamma, null, eps);
    const gradInput = new Float64Array(x.length);
    const gradGamma = new Float64Array(width);
    const gradBeta = new Float64Array(width);
    for (let row = 0; row < rows; row++) {
      const start = row * width;
      let sumGrad = 0;
      let sumGradNormalized = 0;
      for (let d = 0; d < width; d++) {
        const normalized = (x[start + d] - mean[row]) * rstd[row];
        const g = gradOutput[start + d] * (gamma ? gamma[d] : 1);
        sumGrad += g;
        sumGradNormalized += g * normalized;
        gradGamma[d] += gradOutput[start + d] * normalized;
        gradBeta[d] += gradOutput[start + d];
      }
      for (let d = 0; d < width; d++) {
        const normalized = (x[start + d] - mean[row]) * rstd[row];
        const g = gradOutput[start + d] * (gamma ? gamma[d] : 1);
        gradInput[start + d] = rstd[row] * (g - sumGrad / width - (normalized * sumGradNormalized) / width);
      }
    }
    return { gradInput, gradGamma, gradBeta };
  },
};
