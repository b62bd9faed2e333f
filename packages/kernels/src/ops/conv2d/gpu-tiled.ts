/**
 * Variant "gpu-tiled": implicit GEMM with 64x64 workgroup-memory tiles (16x16 invocations, 4x4
 * outputs each), gathered straight from the NCHW tensors. 1x1 stride-1 unpadded convolutions take a
 * plain GEMM over channels (no window arithmetic), reported as "gpu-tiled-1x1".
 */
import { wgsl } from "../../runtime/kernel.ts";
import { OpError } from "../../runtime/tensor.ts";
import { type Conv2dGeometry, GEOMETRY_FIELDS, geometryParams } from "./geometry.ts";

// One implicit-GEMM template, C[batch][m][n] = sum_k A(m, k) B(k, n), with 64x64 tiles of
// A and B staged in workgroup memory. Each op supplies how to gather A and B from its tensors and
// where C goes; the reduction range per batch lets the weight gradient split N*OH*OW into chunks.

export const CONV2D_TILED_TEMPLATE_WGSL = `
{{bindings}}
struct Params { ${GEOMETRY_FIELDS}, M: u32, Ncols: u32, K: u32, chunk: u32, hasBias: u32 }
{{functions}}
const TILE = 64u;
const DEPTH = 16u;
var<workgroup> tileA: array<f32, 1024>; // [DEPTH][TILE]
var<workgroup> tileB: array<f32, 1024>; // [DEPTH][TILE]
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) flat: u32) {
  let batch = wg.z;
  let row0 = wg.y * TILE;
  let col0 = wg.x * TILE;
  let kBegin = min(batch % splits() * p.chunk, p.K);
  let kEnd = min(kBegin + p.chunk, p.K);
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var k0 = kBegin; k0 < kEnd; k0 += DEPTH) {
    for (var e = 0u; e < 4u; e++) {
      let slot = flat + e * 256u;
      let k = k0 + slot / TILE;
      let m = row0 + slot % TILE;
      let n = col0 + slot % TILE;
      var a = 0.0;
      if (k < kEnd && m < p.M) { a = loadA(batch, m, k); }
      var b = 0.0;
      if (k < kEnd && n < p.Ncols) { b = loadB(batch, k, n); }
      tileA[slot] = a;
      tileB[slot] = b;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < DEPTH; kk++) {
      let a = vec4<f32>(tileA[kk * TILE + lid.y * 4u], tileA[kk * TILE + lid.y * 4u + 1u],
                        tileA[kk * TILE + lid.y * 4u + 2u], tileA[kk * TILE + lid.y * 4u + 3u]);
      let b = vec4<f32>(tileB[kk * TILE + lid.x * 4u], tileB[kk * TILE + lid.x * 4u + 1u],
                        tileB[kk * TILE + lid.x * 4u + 2u], tileB[kk * TILE + lid.x * 4u + 3u]);
      acc0 += a.x * b;
      acc1 += a.y * b;
      acc2 += a.z * b;
      acc3 += a.w * b;
    }
    workgroupBarrier();
  }
  let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
  for (var i = 0u; i < 4u; i++) {
    let m = row0 + lid.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {
      let n = col0 + lid.x * 4u + j;
      if (m < p.M && n < p.Ncols) { storeC(batch, m, n, accs[i][j]); }
    }
  }
}`;

/** Gathers one input value x[n][channel][oy*s - p + ky*d][ox*s - p + kx*d], zero in the padding. */
const GATHER_INPUT_WGSL = `
fn gatherInput(n: u32, channel: u32, tap: u32, pixel: u32) -> f32 {
  let kx = tap % p.kW;
  let ky = tap / p.kW;
  let iy = i32((pixel / p.OW) * p.sH + ky * p.dH) - i32(p.pH);
  let ix = i32((pixel % p.OW) * p.sW + kx * p.dW) - i32(p.pW);
  if (iy < 0 || iy >= i32(p.H) || ix < 0 || ix >= i32(p.W)) { return 0.0; }
  return x[((n * p.C + channel) * p.H + u32(iy)) * p.W + u32(ix)];
}`;

/** Forward: batch = n * groups + group; A = weights [Og, Cg*kH*kW], B = input windows, C = y. */
export const TILED_FORWARD = {
  bindings: `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;`,
  functions: (pointwise: boolean) => `
fn splits() -> u32 { return 1u; }
fn loadA(batch: u32, m: u32, k: u32) -> f32 { return w[((batch % p.groups) * p.Og + m) * p.K + k]; }
${
  pointwise
    ? `fn loadB(batch: u32, k: u32, pixel: u32) -> f32 {
  return x[(batch * p.Cg + k) * p.H * p.W + pixel];
}`
    : `${GATHER_INPUT_WGSL}
fn loadB(batch: u32, k: u32, pixel: u32) -> f32 {
  let taps = p.kH * p.kW;
  return gatherInput(batch / p.groups, (batch % p.groups) * p.Cg + k / taps, k % taps, pixel);
}`
}
fn storeC(batch: u32, m: u32, pixel: u32, value: f32) {
  let channel = (batch % p.groups) * p.Og + m;
  var result = value;
  if (p.hasBias != 0u) { result += bias[channel]; }
  y[((batch / p.groups) * p.O + channel) * p.OH * p.OW + pixel] = result;
}`,
};

/** Input gradient: batch = n * groups + group; A = weights transposed [Cg, Og*kH*kW], B = gradOutput
 * gathered where the stride lands (zero elsewhere), C = gradInput. */
export const TILED_BACKWARD_INPUT = {
  bindings: `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradInput: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;`,
  functions: (pointwise: boolean) => `
fn splits() -> u32 { return 1u; }
fn loadA(batch: u32, c: u32, k: u32) -> f32 {
  let taps = p.kH * p.kW;
  let o = (batch % p.groups) * p.Og + k / taps;
  return w[(o * p.Cg + c) * taps + k % taps];
}
${
  pointwise
    ? `fn loadB(batch: u32, k: u32, pixel: u32) -> f32 {
  return gradOutput[(batch * p.Og + k) * p.OH * p.OW + pixel];
}`
    : `fn loadB(batch: u32, k: u32, pixel: u32) -> f32 {
  let taps = p.kH * p.kW;
  let o = (batch % p.groups) * p.Og + k / taps;
  let ky = (k % taps) / p.kW;
  let kx = k % p.kW;
  let ty = i32(pixel / p.W + p.pH) - i32(ky * p.dH);
  let tx = i32(pixel % p.W + p.pW) - i32(kx * p.dW);
  if (ty < 0 || tx < 0 || ty % i32(p.sH) != 0 || tx % i32(p.sW) != 0) { return 0.0; }
  let oy = u32(ty) / p.sH;
  let ox = u32(tx) / p.sW;
  if (oy >= p.OH || ox >= p.OW) { return 0.0; }
  return gradOutput[(((batch / p.groups) * p.O + o) * p.OH + oy) * p.OW + ox];
}`
}
fn storeC(batch: u32, c: u32, pixel: u32, value: f32) {
  gradInput[(batch * p.Cg + c) * p.H * p.W + pixel] = value;
}`,
};

/** Weight gradient: batch = group * splits + chunk; A = gradOutput [Og, N*OH*OW], B = input windows
 * transposed [N*OH*OW, Cg*kH*kW], C = partial sums per chunk [splits][O][Cg*kH*kW]. */
export const TILED_BACKWARD_WEIGHT = {
  bindings: `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;`,
  functions: (pointwise: boolean) => `
fn splits() -> u32 { return (p.K + p.chunk - 1u) / p.chunk; }
fn loadA(batch: u32, m: u32, r: u32) -> f32 {
  let pixels = p.OH * p.OW;
  let o = (batch / splits()) * p.Og + m;
  return gradOutput[((r / pixels) * p.O + o) * pixels + r % pixels];
}
${pointwise ? "" : GATHER_INPUT_WGSL}
fn loadB(batch: u32, r: u32, k: u32) -> f32 {
  let pixels = p.OH * p.OW;
  let taps = p.kH * p.kW;
  let channel = (batch / splits()) * p.Cg + k / taps;
  ${
    pointwise
      ? "return x[((r / pixels) * p.C + channel) * pixels + r % pixels];"
      : "return gatherInput(r / pixels, channel, k % taps, r % pixels);"
  }
}
fn storeC(batch: u32, m: u32, k: u32, value: f32) {
  let o = (batch / splits()) * p.Og + m;
  partial[((batch % splits()) * p.O + o) * p.Ncols + k] = value;
}`,
};

const tiledSources = new Map<string, string>();
export function tiledSource(
  op: { bindings: string; functions: (pointwise: boolean) => string },
  name: string,
  pointwise: boolean,
): string {
  const key = `${name}/${pointwise}`;
  let code = tiledSources.get(key);
  if (!code) {
    code = wgsl(CONV2D_TILED_TEMPLATE_WGSL, { bindings: op.bindings, functions: op.functions(pointwise) });
    tiledSources.set(key, code);
  }
  return code;
}

export function tiledParams(
  g: Conv2dGeometry,
  m: number,
  columns: number,
  k: number,
  chunk: number,
  hasBias: boolean,
) {
  return geometryParams(g).u32(m, columns, k, chunk, hasBias ? 1 : 0);
}

export function tiledWorkgroups(
  op: string,
  m: number,
  columns: number,
  batches: number,
): [number, number, number] {
  const workgroups: [number, number, number] = [Math.ceil(columns / 64), Math.ceil(m / 64), batches];
  if (batches > 65535) throw new OpError(op, `${batches} batches x groups exceed the dispatch limit`);
  return workgroups;
}
