/**
 * The channel-row kernels every group and batch norm variant shares: normalise, and the backward's row
 * sums, input gradient and gamma/beta gradients.
 *
 * x is viewed as [rows = N * C, rowUnits] in loads of 4 (or 1) floats;
 * row r is channel r % C and uses statistic (r / statDivisor) % statModulus (group norm: (n, group);
 * batch norm: channel).
 *
 * Access patterns, chosen per adapter (AccessStyle): elementwise kernels give each invocation a
 * contiguous range of `perInvocation` loads of the flattened tensor, crossing rows as needed. On
 * lavapipe long contiguous runs per invocation are fastest (measured: a contiguous copy ran ~3x
 * faster than the same copy interleaved across invocations); on a GPU perInvocation = 1, so
 * neighbouring invocations touch neighbouring addresses (coalesced). Row sums use (row, chunk)
 * invocations whose chunk is a contiguous span (CPU) or every `chunks`-th load (GPU).
 */
import { LINEAR_INDEX_WGSL, wgsl } from "../../runtime/kernel.ts";
import { VECTOR_TYPES } from "./vectors.ts";

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

/**
 * The row reduction of a backward's (row, chunk) invocation, the one piece the channel rows (group and
 * batch norm) and layer norm share: Σ g and Σ g * x̂ over the chunk's loads (RowSplit in plan.ts: the
 * chunk starts at row start + (index % chunks) * chunkStep and takes every unitStep-th load up to
 * span, clipped at the row's end), written to partials[2 * index] and partials[2 * index + 1].
 * g is `weightedGradient(u, rowStart)`, which the kernel defines (dy, or gamma * dy). The loads are
 * summed in blocks that end at {{blockEnd}} and then added; the kernel's bindings must be named x,
 * gradOutput and partials, its params hold rowUnits, chunks, chunkStep, unitStep and span.
 */
export const ROW_CHUNK_SUMS_WGSL = `
fn horizontalSum(v: {{vector}}) -> f32 { return {{horizontalSum}}; }
fn writeRowChunkSums(index: u32, row: u32, mean: f32, rstd: f32) {
  let rowStart = row * params.rowUnits;
  var sumGrad = {{vector}}(0.0);
  var sumGradCentered = {{vector}}(0.0);
  let begin = rowStart + (index % params.chunks) * params.chunkStep;
  let end = min(begin + params.span, rowStart + params.rowUnits);
  var block = begin;
  while (block < end) {
    let blockEnd = {{blockEnd}};
    var blockGrad = {{vector}}(0.0);
    var blockGradCentered = {{vector}}(0.0);
    for (var u = block; u < blockEnd; u += params.unitStep) {
      let g = weightedGradient(u, rowStart);
      blockGrad += g;
      blockGradCentered += g * (x[u] - mean);
    }
    sumGrad += blockGrad;
    sumGradCentered += blockGradCentered;
    block = blockEnd;
  }
  partials[2u * index] = horizontalSum(sumGrad);
  partials[2u * index + 1u] = horizontalSum(sumGradCentered) * rstd;
}`;

/**
 * The channel rows' blocks: 64 loads summed apart, then added, so rounding grows with 64 + n/64
 * terms, not n.
 */
const CHANNEL_ROW_BLOCK_END = "min(block + 64u * params.unitStep, end)";

/** Per (row, chunk): sum of dy and sum of dy * x̂ (x̂ = (x - mean) * rstd). */
const NORM_BACKWARD_SUMS_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read> gradOutput: array<{{vector}}>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
struct Params { rows: u32, rowUnits: u32, chunks: u32, chunkStep: u32, unitStep: u32, span: u32,
                statDivisor: u32, statModulus: u32 }
@group(0) @binding(4) var<uniform> params: Params;
fn weightedGradient(u: u32, rowStart: u32) -> {{vector}} { return gradOutput[u]; }
${ROW_CHUNK_SUMS_WGSL}
${CHANNEL_ROW_HEADER}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.rows * params.chunks) { return; }
  let row = index / params.chunks;
  let statistic = statisticOf(row);
  writeRowChunkSums(index, row, stats[4u * statistic], stats[4u * statistic + 1u]);
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

export const normalizeChannelsSource = (lanes: 4 | 1) =>
  wgsl(NORMALIZE_CHANNELS_TEMPLATE, VECTOR_TYPES[lanes]);
export const normBackwardSumsSource = (lanes: 4 | 1) =>
  wgsl(NORM_BACKWARD_SUMS_TEMPLATE, { ...VECTOR_TYPES[lanes], blockEnd: CHANNEL_ROW_BLOCK_END });
export const normInputGradientSource = (lanes: 4 | 1) =>
  wgsl(NORM_INPUT_GRADIENT_TEMPLATE, VECTOR_TYPES[lanes]);
