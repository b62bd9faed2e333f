/**
 * Layer norm's normalise kernel (both variants; the statistics are the norm core's). x is
 * [rows, rowUnits] in loads of 1 or 4 floats; each invocation takes a contiguous range of
 * `perInvocation` loads, crossing rows (CPU adapter: long runs; GPUs: 1, coalesced).
 */
import { LINEAR_INDEX_WGSL, wgsl } from "../../runtime/kernel.ts";
import { VECTOR_TYPES } from "../norm-core/vectors.ts";

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

export const layerNormalizeSource = (lanes: 4 | 1) => wgsl(LAYER_NORMALIZE_TEMPLATE, VECTOR_TYPES[lanes]);
