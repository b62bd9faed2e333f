/**
 * Variant "gather" (the only one) of the poolings: one invocation per output element forward (max
 * also stores the argmax position as u32), one per input pixel backward, summing the output
 * gradients of the windows that cover it (a gather, so no atomics are needed).
 */
import { LINEAR_INDEX_WGSL, wgsl } from "../../runtime/kernel.ts";
import { Params } from "../../runtime/uniforms.ts";
import type { Window2d } from "../common/window.ts";

/** The uniforms of every pooling kernel: the element count, then the window geometry. */
const GEOMETRY_STRUCT = `struct Params {
  size: u32, h: u32, w: u32, outH: u32, outW: u32, kH: u32, kW: u32, sH: u32, sW: u32, pH: u32, pW: u32 }`;

export function geometryParams(size: number, g: Window2d): Params {
  return new Params().u32(
    size,
    g.height,
    g.width,
    g.outHeight,
    g.outWidth,
    g.kernelHeight,
    g.kernelWidth,
    g.strideH,
    g.strideW,
    g.padH,
    g.padW,
  );
}

const POOL_FORWARD_TEMPLATE = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
{{argmaxBinding}}
${GEOMETRY_STRUCT}
@group(0) @binding({{paramsBinding}}) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let ox = index % params.outW;
  let oy = (index / params.outW) % params.outH;
  let plane = index / (params.outW * params.outH);
  let base = plane * params.h * params.w;
  var best = -3.4028234e38;
  var bestIndex = 0u;
  var total = 0.0;
  for (var ky = 0u; ky < params.kH; ky++) {
    let iy = i32(oy * params.sH + ky) - i32(params.pH);
    if (iy < 0 || iy >= i32(params.h)) { continue; }
    for (var kx = 0u; kx < params.kW; kx++) {
      let ix = i32(ox * params.sW + kx) - i32(params.pW);
      if (ix < 0 || ix >= i32(params.w)) { continue; }
      let position = u32(iy) * params.w + u32(ix);
      let value = input[base + position];
      total += value;
      if (value > best) { best = value; bestIndex = position; }
    }
  }
  {{store}}
}`;

export const AVG_POOL_WGSL = wgsl(POOL_FORWARD_TEMPLATE, {
  argmaxBinding: "",
  paramsBinding: 2,
  store: "output[index] = total / f32(params.kH * params.kW);",
});
export const MAX_POOL_WGSL = wgsl(POOL_FORWARD_TEMPLATE, {
  argmaxBinding: "@group(0) @binding(2) var<storage, read_write> argmax: array<u32>;",
  paramsBinding: 3,
  store: "output[index] = best; argmax[index] = bestIndex;",
});

const POOL_BACKWARD_TEMPLATE = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read_write> gradInput: array<f32>;
{{argmaxBinding}}
${GEOMETRY_STRUCT}
@group(0) @binding({{paramsBinding}}) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let ix = i32(index % params.w);
  let iy = i32((index / params.w) % params.h);
  let plane = index / (params.w * params.h);
  let position = u32(iy) * params.w + u32(ix);
  // Windows covering (iy, ix): oy * sH - pH <= iy < oy * sH - pH + kH.
  let yFirst = max(0, (iy + i32(params.pH) - i32(params.kH) + i32(params.sH)) / i32(params.sH));
  let yLast = min(i32(params.outH) - 1, (iy + i32(params.pH)) / i32(params.sH));
  let xFirst = max(0, (ix + i32(params.pW) - i32(params.kW) + i32(params.sW)) / i32(params.sW));
  let xLast = min(i32(params.outW) - 1, (ix + i32(params.pW)) / i32(params.sW));
  var total = 0.0;
  for (var oy = yFirst; oy <= yLast; oy++) {
    for (var ox = xFirst; ox <= xLast; ox++) {
      let outIndex = (plane * params.outH + u32(oy)) * params.outW + u32(ox);
      {{accumulate}}
    }
  }
  gradInput[index] = total;
}`;

export const AVG_POOL_BACKWARD_WGSL = wgsl(POOL_BACKWARD_TEMPLATE, {
  argmaxBinding: "",
  paramsBinding: 2,
  accumulate: "total += gradOutput[outIndex] / f32(params.kH * params.kW);",
});
export const MAX_POOL_BACKWARD_WGSL = wgsl(POOL_BACKWARD_TEMPLATE, {
  argmaxBinding: "@group(0) @binding(2) var<storage, read> argmax: array<u32>;",
  paramsBinding: 3,
  accumulate: "if (argmax[outIndex] == position) { total += gradOutput[outIndex]; }",
});
