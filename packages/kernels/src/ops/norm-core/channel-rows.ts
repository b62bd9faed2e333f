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

export const normalizeChannelsSource = (lanes: 4 | 1) =>
  wgsl(NORMALIZE_CHANNELS_TEMPLATE, VECTOR_TYPES[lanes]);
export const normBackwardSumsSource = (lanes: 4 | 1) =>
  wgsl(NORM_BACKWARD_SUMS_TEMPLATE, VECTOR_TYPES[lanes]);
export const normInputGradientSource = (lanes: 4 | 1) =>
  wgsl(NORM_INPUT_GRADIENT_TEMPLATE, VECTOR_TYPES[lanes]);
