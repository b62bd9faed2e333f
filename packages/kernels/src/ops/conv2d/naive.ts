/**
 * Variant "naive": direct convolution, one output element (of y, dx or dw) per invocation, plain
 * loops over the window. The benchmarks' baseline.
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";
import { GEOMETRY_FIELDS } from "./geometry.ts";

export const CONV2D_NAIVE_WGSL = `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
struct Params { ${GEOMETRY_FIELDS}, hasBias: u32 }
@group(0) @binding(4) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= p.N * p.O * p.OH * p.OW) { return; }
  let ox = index % p.OW;
  let oy = (index / p.OW) % p.OH;
  let o = (index / (p.OW * p.OH)) % p.O;
  let n = index / (p.OW * p.OH * p.O);
  let firstChannel = (o / p.Og) * p.Cg;
  var sum = 0.0;
  for (var c = 0u; c < p.Cg; c++) {
    for (var ky = 0u; ky < p.kH; ky++) {
      let iy = i32(oy * p.sH + ky * p.dH) - i32(p.pH);
      if (iy < 0 || iy >= i32(p.H)) { continue; }
      for (var kx = 0u; kx < p.kW; kx++) {
        let ix = i32(ox * p.sW + kx * p.dW) - i32(p.pW);
        if (ix < 0 || ix >= i32(p.W)) { continue; }
        let xValue = x[((n * p.C + firstChannel + c) * p.H + u32(iy)) * p.W + u32(ix)];
        sum += xValue * w[((o * p.Cg + c) * p.kH + ky) * p.kW + kx];
      }
    }
  }
  if (p.hasBias != 0u) { sum += bias[o]; }
  y[index] = sum;
}`;

export const CONV2D_BACKWARD_INPUT_NAIVE_WGSL = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradInput: array<f32>;
struct Params { ${GEOMETRY_FIELDS} }
@group(0) @binding(3) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= p.N * p.C * p.H * p.W) { return; }
  let ix = index % p.W;
  let iy = (index / p.W) % p.H;
  let channel = (index / (p.W * p.H)) % p.C;
  let n = index / (p.W * p.H * p.C);
  let group = channel / p.Cg;
  let c = channel % p.Cg;
  var sum = 0.0;
  for (var ky = 0u; ky < p.kH; ky++) {
    // The output row that read this input row through tap ky, if the stride lands on one.
    let ty = i32(iy + p.pH) - i32(ky * p.dH);
    if (ty < 0 || ty % i32(p.sH) != 0 || ty / i32(p.sH) >= i32(p.OH)) { continue; }
    let oy = u32(ty) / p.sH;
    for (var kx = 0u; kx < p.kW; kx++) {
      let tx = i32(ix + p.pW) - i32(kx * p.dW);
      if (tx < 0 || tx % i32(p.sW) != 0 || tx / i32(p.sW) >= i32(p.OW)) { continue; }
      let ox = u32(tx) / p.sW;
      for (var o = group * p.Og; o < (group + 1u) * p.Og; o++) {
        sum += gradOutput[((n * p.O + o) * p.OH + oy) * p.OW + ox] * w[((o * p.Cg + c) * p.kH + ky) * p.kW + kx];
      }
    }
  }
  gradInput[index] = sum;
}`;

export const CONV2D_BACKWARD_WEIGHT_NAIVE_WGSL = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradWeight: array<f32>;
struct Params { ${GEOMETRY_FIELDS} }
@group(0) @binding(3) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= p.O * p.Cg * p.kH * p.kW) { return; }
  let kx = index % p.kW;
  let ky = (index / p.kW) % p.kH;
  let c = (index / (p.kW * p.kH)) % p.Cg;
  let o = index / (p.kW * p.kH * p.Cg);
  let channel = (o / p.Og) * p.Cg + c;
  var sum = 0.0;
  for (var n = 0u; n < p.N; n++) {
    for (var oy = 0u; oy < p.OH; oy++) {
      let iy = i32(oy * p.sH + ky * p.dH) - i32(p.pH);
      if (iy < 0 || iy >= i32(p.H)) { continue; }
      for (var ox = 0u; ox < p.OW; ox++) {
        let ix = i32(ox * p.sW + kx * p.dW) - i32(p.pW);
        if (ix < 0 || ix >= i32(p.W)) { continue; }
        sum += gradOutput[((n * p.O + o) * p.OH + oy) * p.OW + ox] * x[((n * p.C + channel) * p.H + u32(iy)) * p.W + u32(ix)];
      }
    }
  }
  gradWeight[index] = sum;
}`;
