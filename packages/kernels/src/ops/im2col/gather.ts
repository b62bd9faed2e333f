/**
 * Variant "gather" (the only one): im2col writes one column entry per invocation; its backward,
 * col2im, gives each input pixel one invocation that sums the column entries that read it (a gather,
 * so no atomics are needed).
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";
import { Params } from "../../runtime/uniforms.ts";
import type { Window2d } from "../common/window.ts";

/** The uniforms of both kernels: the element count, then the window geometry. */
const GEOMETRY = `struct Params {
  size: u32, c: u32, h: u32, w: u32, kH: u32, kW: u32, outH: u32, outW: u32,
  strideH: u32, strideW: u32, padH: u32, padW: u32, dilationH: u32, dilationW: u32 }`;

export function geometryParams(size: number, g: Window2d): Params {
  return new Params().u32(
    size,
    g.channels,
    g.height,
    g.width,
    g.kernelHeight,
    g.kernelWidth,
    g.outHeight,
    g.outWidth,
    g.strideH,
    g.strideW,
    g.padH,
    g.padW,
    g.dilationH,
    g.dilationW,
  );
}

/** One column entry per invocation: cols[n, pixel, (c, ky, kx)]. */
export const IM2COL_WGSL = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> cols: array<f32>;
${GEOMETRY}
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let window = params.c * params.kH * params.kW;
  let k = index % window;
  let pixel = (index / window) % (params.outH * params.outW);
  let n = index / (window * params.outH * params.outW);
  let kx = k % params.kW;
  let ky = (k / params.kW) % params.kH;
  let c = k / (params.kW * params.kH);
  let iy = i32((pixel / params.outW) * params.strideH + ky * params.dilationH) - i32(params.padH);
  let ix = i32((pixel % params.outW) * params.strideW + kx * params.dilationW) - i32(params.padW);
  var value = 0.0;
  if (iy >= 0 && iy < i32(params.h) && ix >= 0 && ix < i32(params.w)) {
    value = input[((n * params.c + c) * params.h + u32(iy)) * params.w + u32(ix)];
  }
  cols[index] = value;
}`;

/** One input pixel per invocation: the sum of every column entry that read it. */
export const COL2IM_WGSL = `
@group(0) @binding(0) var<storage, read> cols: array<f32>;
@group(0) @binding(1) var<storage, read_write> gradInput: array<f32>;
${GEOMETRY}
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let x = index % params.w;
  let y = (index / params.w) % params.h;
  let c = (index / (params.w * params.h)) % params.c;
  let n = index / (params.w * params.h * params.c);
  let window = params.c * params.kH * params.kW;
  var total = 0.0;
  for (var ky = 0u; ky < params.kH; ky++) {
    let top = i32(y + params.padH) - i32(ky * params.dilationH);
    if (top < 0 || top % i32(params.strideH) != 0) { continue; }
    let oy = u32(top) / params.strideH;
    if (oy >= params.outH) { continue; }
    for (var kx = 0u; kx < params.kW; kx++) {
      let left = i32(x + params.padW) - i32(kx * params.dilationW);
      if (left < 0 || left % i32(params.strideW) != 0) { continue; }
      let ox = u32(left) / params.strideW;
      if (ox >= params.outW) { continue; }
      let k = (c * params.kH + ky) * params.kW + kx;
      total += cols[((n * params.outH + oy) * params.outW + ox) * window + k];
    }
  }
  gradInput[index] = total;
}`;
