/**
 * Variant "cpu-fused" (the CPU adapter with enough statistics): one invocation per statistic streams
 * its rows (vec4 loads, the one-read shifted statistics of the chunked kernel, exact re-read when
 * ill-conditioned), writes the stats backward needs and normalises, all in one dispatch.
 */
import { LINEAR_INDEX_WGSL, wgsl } from "../../runtime/kernel.ts";
import { VECTOR_TYPES } from "./vectors.ts";

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
export const FUSED_WORKGROUP_SIZE = 8;
const FUSED_VECTOR_TYPES = {
  4: { ...VECTOR_TYPES[4], workgroupSize: FUSED_WORKGROUP_SIZE },
  1: { ...VECTOR_TYPES[1], workgroupSize: FUSED_WORKGROUP_SIZE },
} as const;

export const fusedNormSource = (lanes: 4 | 1) => wgsl(FUSED_NORM_TEMPLATE, FUSED_VECTOR_TYPES[lanes]);
