/**
 * The f16 normalisation kernel that groupNorm and layerNorm share (inference only): f16 input,
 * gamma, beta and output; the statistics in f32. One workgroup of 64 invocations per span (group
 * norm: one (n, group), C/groups * spatial contiguous values; layer norm: one row of D values):
 * 1. each invocation sums its strided share of the span in f32, a tree in workgroup memory gives the
 *    mean;
 * 2. the same for the squared deviations from that mean (two passes, so no cancellation between
 *    E[x^2] and E[x]^2), giving the biased variance and 1/sqrt(var + eps);
 * 3. each value is normalised, scaled by gamma and shifted by beta of its channel in f32, rounded once.
 * Element i of span s belongs to channel (s % spanGroups) * channelsPerSpan + i / spatial.
 */
import { grid, LINEAR_INDEX_WGSL, launch } from "../../runtime/kernel.ts";
import { Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { HALF_PRELUDE_WGSL } from "../common/half.ts";

export const NORM_HALF_WORKGROUP = 64;

export const NORM_HALF_WGSL = `${HALF_PRELUDE_WGSL}
@group(0) @binding(0) var<storage, read> x: array<f16>;
@group(0) @binding(1) var<storage, read> gamma: array<f16>;
@group(0) @binding(2) var<storage, read> beta: array<f16>;
@group(0) @binding(3) var<storage, read_write> y: array<f16>;
struct Params {
  spans: u32, spanLength: u32, spatial: u32, spanGroups: u32,
  channelsPerSpan: u32, hasGamma: u32, hasBeta: u32, eps: f32,
}
@group(0) @binding(4) var<uniform> p: Params;
var<workgroup> partial: array<f32, 64>;
${LINEAR_INDEX_WGSL}

// The workgroup's 64 partial sums added in a tree; every invocation returns the total.
fn workgroupSum(lane: u32, value: f32) -> f32 {
  partial[lane] = value;
  workgroupBarrier();
  for (var width = 32u; width > 0u; width = width / 2u) {
    if (lane < width) { partial[lane] += partial[lane + width]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  let span = wid.x + wid.y * groups.x;
  // Uniform control flow: a workgroup past the last span still takes part in no barrier it skips.
  if (span >= p.spans) { return; }
  let base = span * p.spanLength;
  let count = f32(p.spanLength);
  var sum = 0.0;
  for (var i = lane; i < p.spanLength; i += 64u) { sum += f32(x[base + i]); }
  let mean = workgroupSum(lane, sum) / count;
  var squares = 0.0;
  for (var i = lane; i < p.spanLength; i += 64u) {
    let d = f32(x[base + i]) - mean;
    squares += d * d;
  }
  let rstd = inverseSqrt(workgroupSum(lane, squares) / count + p.eps);
  let firstChannel = (span % p.spanGroups) * p.channelsPerSpan;
  for (var i = lane; i < p.spanLength; i += 64u) {
    let channel = firstChannel + i / p.spatial;
    var value = (f32(x[base + i]) - mean) * rstd;
    if (p.hasGamma != 0u) { value *= f32(gamma[channel]); }
    if (p.hasBeta != 0u) { value += f32(beta[channel]); }
    y[base + i] = toHalf(value);
  }
}`;

export interface HalfNormLayout {
  spans: number;
  spanLength: number;
  /** Consecutive elements sharing one channel (group norm: H*W; layer norm: 1). */
  spatial: number;
  /** Spans that share a sample and differ in channels (group norm: groups; layer norm: 1). */
  spanGroups: number;
  channelsPerSpan: number;
}

/** Launches the shared kernel; the op has checked shapes, dtypes and eps. */
export function normalizeHalf(
  name: string,
  x: Tensor,
  gamma: Tensor | null,
  beta: Tensor | null,
  eps: number,
  layout: HalfNormLayout,
): Tensor {
  const y = Tensor.empty(x.gpu, x.shape, "f16");
  launch(
    x.gpu,
    { name, variant: "f16", code: NORM_HALF_WGSL },
    {
      bindings: [x, gamma ?? x, beta ?? x, y],
      params: new Params()
        .u32(layout.spans, layout.spanLength, layout.spatial, layout.spanGroups)
        .u32(layout.channelsPerSpan, gamma ? 1 : 0, beta ? 1 : 0)
        .f32(eps),
      workgroups: grid(layout.spans * NORM_HALF_WORKGROUP, NORM_HALF_WORKGROUP),
      flops: 8 * x.size,
      bytes: 8 * x.size,
    },
  );
  return y;
}
