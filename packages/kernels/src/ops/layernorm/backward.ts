/**
 * Layer norm's backward kernels (both variants): per (row, chunk) sums of gamma * dy and
 * gamma * dy * x̂, dx from them, and the gamma/beta gradients as column sums over row blocks,
 * finished by a small kernel. Row sums take (row, chunk) invocations with a contiguous (CPU) or
 * interleaved (GPU) chunk and run the norm core's row reduction (ROW_CHUNK_SUMS_WGSL), as the
 * channel rows do.
 */
import { LINEAR_INDEX_WGSL, wgsl } from "../../runtime/kernel.ts";
import { ROW_CHUNK_SUMS_WGSL } from "../norm-core/channel-rows.ts";
import { VECTOR_TYPES } from "../norm-core/vectors.ts";

/**
 * Per (row, chunk): Σ gamma * dy and Σ gamma * dy * x̂, by the norm core's row reduction. Each chunk
 * is summed as one block (blockEnd = end): layer norm has always summed it that way, and blocks of 64
 * as the channel rows use would change its results in the last bits.
 */
const LAYER_NORM_ROW_SUMS_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read> gradOutput: array<{{vector}}>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<{{vector}}>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
struct Params { rows: u32, rowUnits: u32, chunks: u32, chunkStep: u32, unitStep: u32, span: u32, hasGamma: u32 }
@group(0) @binding(5) var<uniform> params: Params;
fn weightedGradient(u: u32, rowStart: u32) -> {{vector}} {
  var g = gradOutput[u];
  if (params.hasGamma == 1u) { g *= gamma[u - rowStart]; }
  return g;
}
${ROW_CHUNK_SUMS_WGSL}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.rows * params.chunks) { return; }
  let row = index / params.chunks;
  writeRowChunkSums(index, row, stats[4u * row], stats[4u * row + 1u]);
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

export const layerNormRowSumsSource = (lanes: 4 | 1) =>
  wgsl(LAYER_NORM_ROW_SUMS_TEMPLATE, { ...VECTOR_TYPES[lanes], blockEnd: "end" });
export const layerNormInputGradientSource = (lanes: 4 | 1) =>
  wgsl(LAYER_NORM_INPUT_GRADIENT_TEMPLATE, VECTOR_TYPES[lanes]);
export const layerNormColumnSumsSource = (lanes: 4 | 1) =>
  wgsl(LAYER_NORM_COLUMN_SUMS_TEMPLATE, VECTOR_TYPES[lanes]);
export const layerNormParameterGradientsSource = (lanes: 4 | 1) =>
  wgsl(LAYER_NORM_PARAMETER_GRADIENTS_TEMPLATE, VECTOR_TYPES[lanes]);
