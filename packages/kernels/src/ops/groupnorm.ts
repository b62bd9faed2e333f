/**
 * Group normalisation (Wu & He 2018), as Stable Diffusion's UNet uses it: x [N, C, ...spatial] split
 * into `groups` groups of C / groups channels; each (n, group) is normalised by its own mean and
 * biased variance, then scaled and shifted per channel.
 *
 * Forward, by adapter: on a GPU the statistics pass splits each (n, group) span (40960 elements at
 * the 64x64x320 UNet level) into chunks reduced by one workgroup each and merged with Chan's parallel
 * variance formula, then a second kernel normalises; on lavapipe, with 32+ groups in the batch, one
 * fused dispatch gives each (n, group) to one invocation (already enough parallel work for its
 * threads and SIMD lanes), and with fewer groups the groups are split into per-invocation chunks.
 * Backward: per (n, channel) sums of dy and dy * x̂, from which one small kernel forms the per-group
 * terms and another the gamma/beta gradients, then an elementwise kernel writes dx.
 *
 * The channel-row kernels here (normalise, backward sums, input gradient, fused, naive) are shared
 * with batch norm, which is the same computation with statistics per channel across the batch.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import type { Gpu } from "../runtime/device.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { OpError, type Shape, sizeOf, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";
import { chooseMomentsVariant, lanesFor, type MomentsVariant, momentStatistics } from "./reduce.ts";

/**
 * "cpu-chunked": statistics split into contiguous chunks per invocation, merged, then a normalise
 * kernel (parallel within each group, no workgroup memory). "gpu-workgroup": the same with each
 * chunk reduced by a 256-invocation workgroup in workgroup memory. "cpu-fused": one invocation per
 * (n, group) streams its group (vec4, one-read statistics) and normalises, in one dispatch.
 * "naive": one invocation per (n, group), scalar loads, three serial passes: the benchmark baseline.
 */
export type GroupNormVariant = MomentsVariant | "cpu-fused" | "naive";

export interface NormVariantOptions<Variant extends string> {
  /** Force a variant (tests run every one; benchmarks time the naive one). */
  variant?: Variant;
}

/**
 * Statistics from which the fused CPU kernel has enough independent work for lavapipe (2 threads x
 * 8 SIMD lanes, 4+ workgroups of 8 to balance): below it, the chunked path splits each group.
 * Measured on lavapipe at SD UNet and DenseNet shapes (README, Normalisation): with 64 groups the
 * fused kernel beat the chunked one at 40960 and at 2560 elements per group.
 */
export const FUSED_NORM_MIN_STATISTICS = 32;

/** One source of truth for the CPU choice between the fused and the chunked kernels. */
export function chooseNormVariant(gpu: Gpu, statistics: number): MomentsVariant | "cpu-fused" {
  const moments = chooseMomentsVariant(gpu);
  return moments === "cpu-chunked" && statistics >= FUSED_NORM_MIN_STATISTICS ? "cpu-fused" : moments;
}

export function chooseGroupNormVariant(gpu: Gpu, shape: Shape, groups: number): GroupNormVariant {
  return chooseNormVariant(gpu, shape[0] * groups);
}

const VECTOR_TYPES = {
  4: { vector: "vec4<f32>", horizontalSum: "v.x + v.y + v.z + v.w" },
  1: { vector: "f32", horizontalSum: "v" },
} as const;

// ---------------------------------------------------------------------------------------------
// WGSL shared with batch norm. x is viewed as [rows = N * C, rowUnits] in loads of 4 (or 1) floats;
// row r is channel r % C and uses statistic (r / statDivisor) % statModulus (group norm: (n, group);
// batch norm: channel).
//
// Access patterns, chosen per adapter (AccessStyle): elementwise kernels give each invocation a
// contiguous range of `perInvocation` loads of the flattened tensor, crossing rows as needed. On
// lavapipe long contiguous runs per invocation are fastest (measured: a contiguous copy ran ~3x
// faster than the same copy interleaved across invocations); on a GPU perInvocation = 1, so
// neighbouring invocations touch neighbouring addresses (coalesced). Row sums use (row, chunk)
// invocations whose chunk is a contiguous span (CPU) or every `chunks`-th load (GPU).
// ---------------------------------------------------------------------------------------------

const CHANNEL_ROW_HEADER = `
fn statisticOf(row: u32) -> u32 { return (row / params.statDivisor) % params.statModulus; }
${LINEAR_INDEX_WGSL}`;

const NORMALIZE_CHANNELS_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<{{vector}}>;
struct Params { totalUnits: u32, rowUnits: u32, perInvocation: u32, channels: u32, statDivisor: u32,
                statModulus: u32, hasGamma: u32, hasBeta: u32 }
@group(0) @binding(5) var<uniform> params: Params;
${CHANNEL_ROW_HEADER}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let begin = linearIndex(gid, groups, 64u) * params.perInvocation;
  if (begin >= params.totalUnits) { return; }
  let end = min(begin + params.perInvocation, params.totalUnits);
  var u = begin;
  while (u < end) {
    let row = u / params.rowUnits;
    let rowEnd = min((row + 1u) * params.rowUnits, end);
    let statistic = statisticOf(row);
    let mean = stats[4u * statistic];
    var scale = stats[4u * statistic + 1u];
    var shift = 0.0;
    if (params.hasGamma == 1u) { scale *= gamma[row % params.channels]; }
    if (params.hasBeta == 1u) { shift = beta[row % params.channels]; }
    for (; u < rowEnd; u++) { y[u] = (x[u] - mean) * scale + shift; }
  }
}`;

/** Per (row, chunk): sum of dy and sum of dy * x̂ (x̂ = (x - mean) * rstd). */
const NORM_BACKWARD_SUMS_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read> gradOutput: array<{{vector}}>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
struct Params { rows: u32, rowUnits: u32, chunks: u32, chunkStep: u32, unitStep: u32, span: u32,
                statDivisor: u32, statModulus: u32 }
@group(0) @binding(4) var<uniform> params: Params;
fn horizontalSum(v: {{vector}}) -> f32 { return {{horizontalSum}}; }
${CHANNEL_ROW_HEADER}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.rows * params.chunks) { return; }
  let row = index / params.chunks;
  let statistic = statisticOf(row);
  let mean = stats[4u * statistic];
  let rstd = stats[4u * statistic + 1u];
  var sumGrad = {{vector}}(0.0);
  var sumGradCentered = {{vector}}(0.0);
  let begin = row * params.rowUnits + (index % params.chunks) * params.chunkStep;
  let end = min(begin + params.span, (row + 1u) * params.rowUnits);
  // Blocks of 64 loads summed apart, then added: rounding grows with 64 + n/64 terms, not n.
  let blockSpan = 64u * params.unitStep;
  for (var block = begin; block < end; block += blockSpan) {
    var blockGrad = {{vector}}(0.0);
    var blockGradCentered = {{vector}}(0.0);
    for (var u = block; u < min(block + blockSpan, end); u += params.unitStep) {
      let g = gradOutput[u];
      blockGrad += g;
      blockGradCentered += g * (x[u] - mean);
    }
    sumGrad += blockGrad;
    sumGradCentered += blockGradCentered;
  }
  partials[2u * index] = horizontalSum(sumGrad);
  partials[2u * index + 1u] = horizontalSum(sumGradCentered) * rstd;
}`;

/** dx = rstd * (gamma * dy - k1 - x̂ * k2), with (k1, k2) per statistic from `coefficients`. */
const NORM_INPUT_GRADIENT_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read> gradOutput: array<{{vector}}>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> coefficients: array<f32>;
@group(0) @binding(5) var<storage, read_write> gradInput: array<{{vector}}>;
struct Params { totalUnits: u32, rowUnits: u32, perInvocation: u32, channels: u32, statDivisor: u32,
                statModulus: u32, hasGamma: u32 }
@group(0) @binding(6) var<uniform> params: Params;
${CHANNEL_ROW_HEADER}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let begin = linearIndex(gid, groups, 64u) * params.perInvocation;
  if (begin >= params.totalUnits) { return; }
  let end = min(begin + params.perInvocation, params.totalUnits);
  var u = begin;
  while (u < end) {
    let row = u / params.rowUnits;
    let rowEnd = min((row + 1u) * params.rowUnits, end);
    let statistic = statisticOf(row);
    let mean = stats[4u * statistic];
    let rstd = stats[4u * statistic + 1u];
    var weight = 1.0;
    if (params.hasGamma == 1u) { weight = gamma[row % params.channels]; }
    let k1 = coefficients[2u * statistic];
    let k2 = coefficients[2u * statistic + 1u];
    for (; u < rowEnd; u++) {
      let normalized = (x[u] - mean) * rstd;
      gradInput[u] = rstd * (weight * gradOutput[u] - k1 - normalized * k2);
    }
  }
}`;

/** gradBeta[c] = Σ dy and gradGamma[c] = Σ dy * x̂ over samples and chunks of channel c. */
export const CHANNEL_PARAMETER_GRADIENTS_WGSL = `
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> gradGamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradBeta: array<f32>;
struct Params { channels: u32, samples: u32, chunks: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let channel = linearIndex(gid, groups, 64u);
  if (channel >= params.channels) { return; }
  var sumGrad = 0.0;
  var sumGradNormalized = 0.0;
  for (var n = 0u; n < params.samples; n++) {
    let base = (n * params.channels + channel) * params.chunks;
    for (var j = 0u; j < params.chunks; j++) {
      sumGrad += partials[2u * (base + j)];
      sumGradNormalized += partials[2u * (base + j) + 1u];
    }
  }
  gradBeta[channel] = sumGrad;
  gradGamma[channel] = sumGradNormalized;
}`;

/** Group norm's per-(n, group) terms: k1 = mean of gamma * dy, k2 = mean of gamma * dy * x̂. */
export const GROUP_NORM_COEFFICIENTS_WGSL = `
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read_write> coefficients: array<f32>;
struct Params { statistics: u32, groups: u32, channelsPerGroup: u32, channels: u32, chunks: u32, hasGamma: u32 }
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let statistic = linearIndex(gid, groups, 64u);
  if (statistic >= params.statistics) { return; }
  let n = statistic / params.groups;
  let group = statistic % params.groups;
  var sumGrad = 0.0;
  var sumGradNormalized = 0.0;
  for (var k = 0u; k < params.channelsPerGroup; k++) {
    let channel = group * params.channelsPerGroup + k;
    var weight = 1.0;
    if (params.hasGamma == 1u) { weight = gamma[channel]; }
    let base = (n * params.channels + channel) * params.chunks;
    var channelGrad = 0.0;
    var channelGradNormalized = 0.0;
    for (var j = 0u; j < params.chunks; j++) {
      channelGrad += partials[2u * (base + j)];
      channelGradNormalized += partials[2u * (base + j) + 1u];
    }
    sumGrad += weight * channelGrad;
    sumGradNormalized += weight * channelGradNormalized;
  }
  let count = stats[4u * statistic + 3u];
  coefficients[2u * statistic] = sumGrad / count;
  coefficients[2u * statistic + 1u] = sumGradNormalized / count;
}`;

/**
 * The naive kernel: one invocation per statistic walks all its rows three times (mean, variance,
 * normalise). Rows of statistic s: s * baseStride + a * outerStride + k, a < outer, k < inner.
 */
export const NAIVE_NORM_WGSL = `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
struct Params { statistics: u32, rowLength: u32, baseStride: u32, outer: u32, outerStride: u32, inner: u32,
                channels: u32, hasGamma: u32, hasBeta: u32, eps: f32 }
@group(0) @binding(5) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
fn rowOf(statistic: u32, a: u32, k: u32) -> u32 {
  return statistic * params.baseStride + a * params.outerStride + k;
}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let statistic = linearIndex(gid, groups, 64u);
  if (statistic >= params.statistics) { return; }
  var sum = 0.0;
  for (var a = 0u; a < params.outer; a++) {
    for (var k = 0u; k < params.inner; k++) {
      let start = rowOf(statistic, a, k) * params.rowLength;
      for (var i = 0u; i < params.rowLength; i++) { sum += x[start + i]; }
    }
  }
  let count = f32(params.outer * params.inner * params.rowLength);
  let mean = sum / count;
  var squares = 0.0;
  for (var a = 0u; a < params.outer; a++) {
    for (var k = 0u; k < params.inner; k++) {
      let start = rowOf(statistic, a, k) * params.rowLength;
      for (var i = 0u; i < params.rowLength; i++) {
        let deviation = x[start + i] - mean;
        squares += deviation * deviation;
      }
    }
  }
  let variance = squares / count;
  let rstd = inverseSqrt(variance + params.eps);
  stats[4u * statistic] = mean;
  stats[4u * statistic + 1u] = rstd;
  stats[4u * statistic + 2u] = variance;
  stats[4u * statistic + 3u] = count;
  for (var a = 0u; a < params.outer; a++) {
    for (var k = 0u; k < params.inner; k++) {
      let row = rowOf(statistic, a, k);
      let channel = row % params.channels;
      var scale = rstd;
      var shift = 0.0;
      if (params.hasGamma == 1u) { scale *= gamma[channel]; }
      if (params.hasBeta == 1u) { shift = beta[channel]; }
      let start = row * params.rowLength;
      for (var i = 0u; i < params.rowLength; i++) { y[start + i] = (x[start + i] - mean) * scale + shift; }
    }
  }
}`;

/**
 * The fused kernel: one invocation per statistic, like the naive one, but with vec4 loads and the
 * one-read shifted statistics of the chunked path (exact re-read when ill-conditioned).
 */
const FUSED_NORM_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<{{vector}}>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
struct Params { statistics: u32, rowUnits: u32, baseStride: u32, outer: u32, outerStride: u32, inner: u32,
                channels: u32, hasGamma: u32, hasBeta: u32, eps: f32 }
@group(0) @binding(5) var<uniform> params: Params;
fn horizontalSum(v: {{vector}}) -> f32 { return {{horizontalSum}}; }
${LINEAR_INDEX_WGSL}
fn rowOf(statistic: u32, a: u32, k: u32) -> u32 {
  return statistic * params.baseStride + a * params.outerStride + k;
}
@compute @workgroup_size({{workgroupSize}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let statistic = linearIndex(gid, groups, {{workgroupSize}}u);
  if (statistic >= params.statistics) { return; }
  // Shift: the mean of the first 16 values (a pilot estimate of the mean), as in the chunked kernel.
  let pilotStart = rowOf(statistic, 0u, 0u) * params.rowUnits;
  let pilotEnd = min(pilotStart + {{pilotLoads}}u, pilotStart + params.rowUnits);
  var pilot = {{vector}}(0.0);
  for (var i = pilotStart; i < pilotEnd; i++) { pilot += x[i]; }
  let shift = horizontalSum(pilot) / f32((pilotEnd - pilotStart) * {{lanes}}u);
  var sum = {{vector}}(0.0);
  var squares = {{vector}}(0.0);
  for (var a = 0u; a < params.outer; a++) {
    for (var k = 0u; k < params.inner; k++) {
      let start = rowOf(statistic, a, k) * params.rowUnits;
      let end = start + params.rowUnits;
      // Blocks of 64 loads summed apart, then added: rounding grows with 64 + n/64 terms, not n.
      for (var block = start; block < end; block += 64u) {
        var blockSum = {{vector}}(0.0);
        var blockSquares = {{vector}}(0.0);
        for (var i = block; i < min(block + 64u, end); i++) {
          let deviation = x[i] - shift;
          blockSum += deviation;
          blockSquares += deviation * deviation;
        }
        sum += blockSum;
        squares += blockSquares;
      }
    }
  }
  let count = f32(params.outer * params.inner * params.rowUnits * {{lanes}}u);
  let shiftedSum = horizontalSum(sum);
  let shiftedSquares = horizontalSum(squares);
  let mean = shift + shiftedSum / count;
  let offsetPart = shiftedSum * shiftedSum / count;
  var m2 = max(shiftedSquares - offsetPart, 0.0);
  if (offsetPart > 0.5 * shiftedSquares) {
    var centered = {{vector}}(0.0);
    for (var a = 0u; a < params.outer; a++) {
      for (var k = 0u; k < params.inner; k++) {
        let start = rowOf(statistic, a, k) * params.rowUnits;
        for (var i = start; i < start + params.rowUnits; i++) {
          let deviation = x[i] - mean;
          centered += deviation * deviation;
        }
      }
    }
    m2 = horizontalSum(centered);
  }
  let variance = m2 / count;
  let rstd = inverseSqrt(variance + params.eps);
  stats[4u * statistic] = mean;
  stats[4u * statistic + 1u] = rstd;
  stats[4u * statistic + 2u] = variance;
  stats[4u * statistic + 3u] = count;
  for (var a = 0u; a < params.outer; a++) {
    for (var k = 0u; k < params.inner; k++) {
      let row = rowOf(statistic, a, k);
      var scale = rstd;
      var offset = 0.0;
      if (params.hasGamma == 1u) { scale *= gamma[row % params.channels]; }
      if (params.hasBeta == 1u) { offset = beta[row % params.channels]; }
      let start = row * params.rowUnits;
      for (var i = start; i < start + params.rowUnits; i++) { y[i] = (x[i] - mean) * scale + offset; }
    }
  }
}`;

/** Workgroups of one llvmpipe SIMD batch, so a few dozen statistics still spread over its threads. */
const FUSED_WORKGROUP_SIZE = 8;
const FUSED_VECTOR_TYPES = {
  4: { ...VECTOR_TYPES[4], lanes: 4, pilotLoads: 4, workgroupSize: FUSED_WORKGROUP_SIZE },
  1: { ...VECTOR_TYPES[1], lanes: 1, pilotLoads: 16, workgroupSize: FUSED_WORKGROUP_SIZE },
} as const;

export const fusedNormSource = (lanes: 4 | 1) => wgsl(FUSED_NORM_TEMPLATE, FUSED_VECTOR_TYPES[lanes]);

export const normalizeChannelsSource = (lanes: 4 | 1) =>
  wgsl(NORMALIZE_CHANNELS_TEMPLATE, VECTOR_TYPES[lanes]);
export const normBackwardSumsSource = (lanes: 4 | 1) =>
  wgsl(NORM_BACKWARD_SUMS_TEMPLATE, VECTOR_TYPES[lanes]);
export const normInputGradientSource = (lanes: 4 | 1) =>
  wgsl(NORM_INPUT_GRADIENT_TEMPLATE, VECTOR_TYPES[lanes]);

// ---------------------------------------------------------------------------------------------
// Launchers shared with batch norm
// ---------------------------------------------------------------------------------------------

/** x as [rows = N * C, rowLength = spatial] with row r using statistic (r / statDivisor) % statModulus. */
export interface ChannelRows {
  samples: number;
  channels: number;
  rowLength: number;
  statDivisor: number;
  statModulus: number;
}

/** Memory access pattern of the elementwise and row-sum kernels (see the WGSL notes above). */
export type AccessStyle = "cpu" | "gpu";

/** The access style a variant implies: the CPU-style statistics go with CPU-style access. */
export function accessStyleOf(gpu: Gpu, variant: string | undefined): AccessStyle {
  if (variant === "cpu-chunked" || variant === "cpu-fused") return "cpu";
  if (variant === "gpu-workgroup") return "gpu";
  return gpu.kind === "cpu" ? "cpu" : "gpu";
}

/** Loads per invocation for elementwise kernels over `totalUnits` loads. */
export function loadsPerInvocation(style: AccessStyle, totalUnits: number): number {
  // CPU: ≥ 256 contiguous loads each, at most ~512 invocations (a few per SIMD lane group and core).
  return style === "cpu" ? Math.max(256, Math.ceil(totalUnits / 512)) : 1;
}

/** How row sums split a row: (row, chunk) invocations and the loop each one runs. */
export interface RowSplit {
  chunks: number;
  /** Offset of chunk k's first load: k * chunkStep. */
  chunkStep: number;
  /** Distance between consecutive loads of one chunk. */
  unitStep: number;
  /** Loads from the chunk's first to its end (clipped at the row's end). */
  span: number;
}

export function rowSplit(style: AccessStyle, rows: number, rowUnits: number): RowSplit {
  if (style === "cpu") {
    // Contiguous chunks of ≥ 64 loads; split rows only when there are too few rows to share out.
    const chunks = Math.max(1, Math.min(Math.ceil(rowUnits / 64), Math.ceil(256 / rows)));
    const chunkUnits = Math.ceil(rowUnits / chunks);
    return { chunks: Math.ceil(rowUnits / chunkUnits), chunkStep: chunkUnits, unitStep: 1, span: chunkUnits };
  }
  const chunks = Math.max(1, Math.min(rowUnits, Math.ceil(131072 / rows)));
  return { chunks, chunkStep: 1, unitStep: chunks, span: rowUnits };
}

function rowGeometry(layout: ChannelRows) {
  const rows = layout.samples * layout.channels;
  const lanes = lanesFor(layout.rowLength);
  const rowUnits = layout.rowLength / lanes;
  return { rows, lanes, rowUnits, totalUnits: rows * rowUnits };
}

/** y = (x - mean) * rstd * gamma + beta per channel row. `gamma`/`beta` may be null (1 and 0). */
export function normalizeChannels(
  op: string,
  variant: string,
  style: AccessStyle,
  x: Tensor,
  stats: Tensor,
  gamma: Tensor | null,
  beta: Tensor | null,
  layout: ChannelRows,
): Tensor {
  const gpu = x.gpu;
  const geometry = rowGeometry(layout);
  const perInvocation = loadsPerInvocation(style, geometry.totalUnits);
  const y = Tensor.empty(gpu, x.shape);
  launch(
    gpu,
    { name: op, variant, code: normalizeChannelsSource(geometry.lanes) },
    {
      bindings: [x, stats, gamma ?? x, beta ?? x, y],
      params: new Params().u32(
        geometry.totalUnits,
        geometry.rowUnits,
        perInvocation,
        layout.channels,
        layout.statDivisor,
        layout.statModulus,
        gamma ? 1 : 0,
        beta ? 1 : 0,
      ),
      workgroups: grid(Math.ceil(geometry.totalUnits / perInvocation), 64),
      flops: 3 * x.size,
      bytes: 8 * x.size,
    },
  );
  return y;
}

export interface StatisticRows {
  statistics: number;
  rowLength: number;
  baseStride: number;
  outer: number;
  outerStride: number;
  inner: number;
  channels: number;
}

/** The naive reference kernel; returns y and the [statistics, 4] stats backward needs. */
export function naiveNormalize(
  op: string,
  x: Tensor,
  gamma: Tensor | null,
  beta: Tensor | null,
  eps: number,
  layout: StatisticRows,
): { y: Tensor; stats: Tensor } {
  const gpu = x.gpu;
  const y = Tensor.empty(gpu, x.shape);
  const stats = Tensor.empty(gpu, [layout.statistics, 4]);
  launch(
    gpu,
    { name: op, variant: "naive", code: NAIVE_NORM_WGSL },
    {
      bindings: [x, gamma ?? x, beta ?? x, y, stats],
      params: new Params()
        .u32(
          layout.statistics,
          layout.rowLength,
          layout.baseStride,
          layout.outer,
          layout.outerStride,
          layout.inner,
          layout.channels,
          gamma ? 1 : 0,
          beta ? 1 : 0,
        )
        .f32(eps),
      workgroups: grid(layout.statistics, 64),
      flops: 7 * x.size,
      bytes: 12 * x.size,
    },
  );
  return { y, stats };
}

/** The fused kernel (see FUSED_NORM_TEMPLATE); returns y and the [statistics, 4] stats. */
export function fusedNormalize(
  op: string,
  x: Tensor,
  gamma: Tensor | null,
  beta: Tensor | null,
  eps: number,
  layout: StatisticRows,
): { y: Tensor; stats: Tensor } {
  const gpu = x.gpu;
  const lanes = lanesFor(layout.rowLength);
  const y = Tensor.empty(gpu, x.shape);
  const stats = Tensor.empty(gpu, [layout.statistics, 4]);
  launch(
    gpu,
    { name: op, variant: "cpu-fused", code: fusedNormSource(lanes) },
    {
      bindings: [x, gamma ?? x, beta ?? x, y, stats],
      params: new Params()
        .u32(
          layout.statistics,
          layout.rowLength / lanes,
          layout.baseStride,
          layout.outer,
          layout.outerStride,
          layout.inner,
          layout.channels,
          gamma ? 1 : 0,
          beta ? 1 : 0,
        )
        .f32(eps),
      workgroups: grid(layout.statistics, FUSED_WORKGROUP_SIZE),
      flops: 7 * x.size,
      bytes: 8 * x.size,
    },
  );
  return { y, stats };
}

/** Per (row, chunk) sums of dy and dy * x̂: a [rows * chunks, 2] tensor. */
export function normBackwardSums(
  op: string,
  style: AccessStyle,
  x: Tensor,
  gradOutput: Tensor,
  stats: Tensor,
  layout: ChannelRows,
): { partials: Tensor; chunks: number } {
  const gpu = x.gpu;
  const geometry = rowGeometry(layout);
  const split = rowSplit(style, geometry.rows, geometry.rowUnits);
  const invocations = geometry.rows * split.chunks;
  const partials = Tensor.empty(gpu, [invocations, 2]);
  launch(
    gpu,
    { name: `${op}Backward`, variant: `row-sums-${style}`, code: normBackwardSumsSource(geometry.lanes) },
    {
      bindings: [x, gradOutput, stats, partials],
      params: new Params().u32(
        geometry.rows,
        geometry.rowUnits,
        split.chunks,
        split.chunkStep,
        split.unitStep,
        split.span,
        layout.statDivisor,
        layout.statModulus,
      ),
      workgroups: grid(invocations, 64),
      flops: 4 * x.size,
      bytes: 8 * x.size + 8 * invocations,
    },
  );
  return { partials, chunks: split.chunks };
}

/** gamma and beta gradients [C] from the backward row sums. */
export function channelParameterGradients(
  op: string,
  partials: Tensor,
  chunks: number,
  layout: ChannelRows,
): { gradGamma: Tensor; gradBeta: Tensor } {
  const gpu = partials.gpu;
  const gradGamma = Tensor.empty(gpu, [layout.channels]);
  const gradBeta = Tensor.empty(gpu, [layout.channels]);
  launch(
    gpu,
    { name: `${op}Backward`, variant: "parameter-gradients", code: CHANNEL_PARAMETER_GRADIENTS_WGSL },
    {
      bindings: [partials, gradGamma, gradBeta],
      params: new Params().u32(layout.channels, layout.samples, chunks),
      workgroups: grid(layout.channels, 64),
      flops: partials.size,
      bytes: 4 * partials.size + 8 * layout.channels,
    },
  );
  return { gradGamma, gradBeta };
}

/** dx = rstd * (gamma * dy - k1 - x̂ * k2) with (k1, k2) = coefficients[statistic]. */
export function normInputGradient(
  op: string,
  style: AccessStyle,
  x: Tensor,
  gradOutput: Tensor,
  stats: Tensor,
  gamma: Tensor | null,
  coefficients: Tensor,
  layout: ChannelRows,
): Tensor {
  const gpu = x.gpu;
  const geometry = rowGeometry(layout);
  const perInvocation = loadsPerInvocation(style, geometry.totalUnits);
  const gradInput = Tensor.empty(gpu, x.shape);
  launch(
    gpu,
    {
      name: `${op}Backward`,
      variant: `input-gradient-${style}`,
      code: normInputGradientSource(geometry.lanes),
    },
    {
      bindings: [x, gradOutput, stats, gamma ?? x, coefficients, gradInput],
      params: new Params().u32(
        geometry.totalUnits,
        geometry.rowUnits,
        perInvocation,
        layout.channels,
        layout.statDivisor,
        layout.statModulus,
        gamma ? 1 : 0,
      ),
      workgroups: grid(Math.ceil(geometry.totalUnits / perInvocation), 64),
      flops: 6 * x.size,
      bytes: 12 * x.size,
    },
  );
  return gradInput;
}

/** A gamma/beta operand must be an f32 vector of C values. */
export function checkChannelParameter(
  op: string,
  name: string,
  parameter: Tensor | null | undefined,
  channels: number,
  x: Tensor,
): void {
  if (!parameter) return;
  if (parameter.dtype !== "f32") {
    throw new OpError(op, `needs f32 ${name}, got ${parameter.dtype}`, { x, [name]: parameter });
  }
  if (parameter.rank !== 1 || parameter.size !== channels) {
    throw new OpError(op, `${name} must have shape [${channels}] (one value per channel)`, {
      x,
      [name]: parameter,
    });
  }
}

export function checkEps(op: string, eps: number): void {
  if (!Number.isFinite(eps) || eps < 0) throw new OpError(op, `eps must be a finite number >= 0, got ${eps}`);
}

// ---------------------------------------------------------------------------------------------
// Group norm
// ---------------------------------------------------------------------------------------------

export function groupNormCost(shape: Shape) {
  const size = sizeOf(shape);
  // Statistics: 4 FLOPs per element (two passes); normalise: 3. Reads x twice, writes y once.
  return { flops: 7 * size, bytes: 12 * size };
}

function groupLayout(op: string, x: Tensor, groups: number) {
  if (x.dtype !== "f32") throw new OpError(op, `needs f32 input, got ${x.dtype}`, { x });
  if (x.rank < 2) throw new OpError(op, "needs x of shape [N, C, ...spatial]", { x });
  const [samples, channels] = x.shape;
  if (!Number.isInteger(groups) || groups < 1 || channels % groups !== 0) {
    throw new OpError(op, `groups must be a positive divisor of the ${channels} channels, got ${groups}`, {
      x,
    });
  }
  const spatial = x.size / (samples * channels);
  const channelsPerGroup = channels / groups;
  const rows: ChannelRows = {
    samples,
    channels,
    rowLength: spatial,
    statDivisor: channelsPerGroup,
    statModulus: samples * groups,
  };
  return { samples, channels, spatial, channelsPerGroup, statistics: samples * groups, rows };
}

/**
 * y = (x - mean) / sqrt(var + eps) * gamma + beta, statistics over each (n, group).
 * x: [N, C, ...spatial]; gamma, beta: [C] or null (1 and 0). Differentiable in x, gamma and beta.
 */
export function groupNorm(
  x: Tensor,
  groups: number,
  gamma: Tensor | null = null,
  beta: Tensor | null = null,
  eps = 1e-5,
  options: NormVariantOptions<GroupNormVariant> = {},
): Tensor {
  const op = "groupNorm";
  const layout = groupLayout(op, x, groups);
  checkChannelParameter(op, "gamma", gamma, layout.channels, x);
  checkChannelParameter(op, "beta", beta, layout.channels, x);
  checkEps(op, eps);
  const gpu = x.gpu;
  const variant = options.variant ?? chooseGroupNormVariant(gpu, x.shape, groups);
  const style = accessStyleOf(gpu, variant);
  let y: Tensor;
  let stats: Tensor;
  if (variant === "naive" || variant === "cpu-fused") {
    const statisticRows: StatisticRows = {
      statistics: layout.statistics,
      rowLength: layout.spatial,
      baseStride: layout.channelsPerGroup,
      outer: 1,
      outerStride: 0,
      inner: layout.channelsPerGroup,
      channels: layout.channels,
    };
    ({ y, stats } = (variant === "naive" ? naiveNormalize : fusedNormalize)(
      op,
      x,
      gamma,
      beta,
      eps,
      statisticRows,
    ));
  } else {
    // Each (n, group) is one contiguous span of C/groups * spatial elements.
    stats = momentStatistics(
      op,
      x,
      layout.statistics,
      layout.channelsPerGroup * layout.spatial,
      { statistics: layout.statistics, outer: 1, outerStride: 0 },
      eps,
      variant,
    );
    y = normalizeChannels(op, variant, style, x, stats, gamma, beta, layout.rows);
  }
  const inputs = [x, gamma, beta].filter((tensor): tensor is Tensor => tensor !== null);
  if (needsGrad(...inputs)) {
    record(
      op,
      inputs,
      [y],
      ([gradOutput]) => {
        const grads = groupNormBackward(x, gradOutput!, stats, gamma, groups, layout, style, {
          input: x.requiresGrad,
          gamma: gamma?.requiresGrad ?? false,
          beta: beta?.requiresGrad ?? false,
        });
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

function groupNormBackward(
  x: Tensor,
  gradOutput: Tensor,
  stats: Tensor,
  gamma: Tensor | null,
  groups: number,
  layout: ReturnType<typeof groupLayout>,
  style: AccessStyle,
  wanted: { input: boolean; gamma: boolean; beta: boolean },
): { gradInput: Tensor | null; gradGamma: Tensor | null; gradBeta: Tensor | null } {
  const op = "groupNorm";
  const gpu = x.gpu;
  const { partials, chunks } = normBackwardSums(op, style, x, gradOutput, stats, layout.rows);
  let gradInput: Tensor | null = null;
  let gradGamma: Tensor | null = null;
  let gradBeta: Tensor | null = null;
  if (wanted.input) {
    const coefficients = Tensor.empty(gpu, [layout.statistics, 2]);
    launch(
      gpu,
      { name: `${op}Backward`, variant: "group-coefficients", code: GROUP_NORM_COEFFICIENTS_WGSL },
      {
        bindings: [partials, stats, gamma ?? stats, coefficients],
        params: new Params().u32(
          layout.statistics,
          groups,
          layout.channelsPerGroup,
          layout.channels,
          chunks,
          gamma ? 1 : 0,
        ),
        workgroups: grid(layout.statistics, 64),
        flops: 2 * partials.size,
        bytes: 4 * partials.size,
      },
    );
    gradInput = normInputGradient(op, style, x, gradOutput, stats, gamma, coefficients, layout.rows);
    coefficients.release();
  }
  if (wanted.gamma || wanted.beta) {
    const grads = channelParameterGradients(op, partials, chunks, layout.rows);
    gradGamma = grads.gradGamma;
    gradBeta = grads.gradBeta;
    if (!wanted.gamma) gradGamma.release();
    if (!wanted.beta) gradBeta.release();
    if (!wanted.gamma) gradGamma = null;
    if (!wanted.beta) gradBeta = null;
  }
  partials.release();
  return { gradInput, gradGamma, gradBeta };
}

// ---------------------------------------------------------------------------------------------
// Float64 reference
// ---------------------------------------------------------------------------------------------

export const groupNormReference = {
  forward(
    x: Float64Array,
    shape: Shape,
    groups: number,
    gamma: Float64Array | null,
    beta: Float64Array | null,
    eps = 1e-5,
  ): { y: Float64Array; mean: Float64Array; rstd: Float64Array } {
    const [samples, channels] = shape;
    const spatial = x.length / (samples * channels);
    const perGroup = channels / groups;
    const span = perGroup * spatial;
    const y = new Float64Array(x.length);
    const mean = new Float64Array(samples * groups);
    const rstd = new Float64Array(samples * groups);
    for (let statistic = 0; statistic < samples * groups; statistic++) {
      const start = statistic * span;
      let sum = 0;
      for (let i = 0; i < span; i++) sum += x[start + i];
      const mu = sum / span;
      let squares = 0;
      for (let i = 0; i < span; i++) squares += (x[start + i] - mu) ** 2;
      const r = 1 / Math.sqrt(squares / span + eps);
      mean[statistic] = mu;
      rstd[statistic] = r;
      for (let i = 0; i < span; i++) {
        const channel = (statistic % groups) * perGroup + Math.floor(i / spatial);
        y[start + i] = (x[start + i] - mu) * r * (gamma ? gamma[channel] : 1) + (beta ? beta[channel] : 0);
      }
    }
    return { y, mean, rstd };
  },
  backward(
    x: Float64Array,
    shape: Shape,
    groups: number,
    gamma: Float64Array | null,
    gradOutput: Float64Array,
    eps = 1e-5,
  ): { gradInput: Float64Array; gradGamma: Float64Array; gradBeta: Float64Array } {
    const [samples, channels] = shape;
    const spatial = x.length / (samples * channels);
    const perGroup = channels / groups;
    const span = perGroup * spatial;
    const { mean, rstd } = groupNormReference.forward(x, shape, groups, gamma, null, eps);
    const gradInput = new Float64Array(x.length);
    const gradGamma = new Float64Array(channels);
    const gradBeta = new Float64Array(channels);
    for (let statistic = 0; statistic < samples * groups; statistic++) {
      const start = statistic * span;
      const channelOf = (i: number) => (statistic % groups) * perGroup + Math.floor(i / spatial);
      let sumGrad = 0;
      let sumGradNormalized = 0;
      for (let i = 0; i < span; i++) {
        const normalized = (x[start + i] - mean[statistic]) * rstd[statistic];
        const channel = channelOf(i);
        const gradNormalized = gradOutput[start + i] * (gamma ? gamma[channel] : 1);
        sumGrad += gradNormalized;
        sumGradNormalized += gradNormalized * normalized;
        gradGamma[channel] += gradOutput[start + i] * normalized;
        gradBeta[channel] += gradOutput[start + i];
      }
      for (let i = 0; i < span; i++) {
        const normalized = (x[start + i] - mean[statistic]) * rstd[statistic];
        const gradNormalized = gradOutput[start + i] * (gamma ? gamma[channelOf(i)] : 1);
        gradInput[start + i] =
          rstd[statistic] * (gradNormalized - sumGrad / span - (normalized * sumGradNormalized) / span);
      }
    }
    return { gradInput, gradGamma, gradBeta };
  },
};
