/**
 * 2-D convolution over NCHW images with weights [O, C/groups, kH, kW] (PyTorch's layout): stride,
 * padding and dilation per axis, groups, optional bias. Forward, the gradient with respect to the input
 * (a transposed convolution), the gradient with respect to the weight (a reduction over N*OH*OW, split
 * into chunks so it parallelises) and the bias gradient; `conv2d` records all of them on the tape.
 *
 * Three variants, chosen by `chooseConv2dVariant` and forceable with `{ variant }`:
 * - "cpu-texture" (lavapipe/llvmpipe): llvmpipe turns every buffer load whose address varies per
 *   invocation into per-lane scalar loads with a bounds-check branch each, while a `textureLoad` of an
 *   rgba32float texel is one branch-free gather of four floats (measured: ~1.7x fewer instructions per
 *   convolution than the best buffer version). So operands are first packed into textures, four channels
 *   per texel and zero padding included (no bounds checks in the inner loop), and each invocation keeps
 *   an 8 output-channel x 8 pixel block in registers: per tap it loads 8 input texels and 8 weight
 *   texels (vec4 loads of four channels each) for 256 multiply-adds. No workgroup memory, no im2col.
 * - "gpu-tiled": implicit GEMM with 64x64 workgroup-memory tiles (16x16 invocations, 4x4 outputs
 *   each); the tiles are gathered straight from the NCHW tensors. 1x1 stride-1 unpadded convolutions
 *   take a plain GEMM over channels (no window arithmetic), reported as "gpu-tiled-1x1".
 * - "naive": direct convolution, one output per invocation; the benchmark's reference.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import type { Gpu } from "../runtime/device.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { OpError, type Shape, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

export type Conv2dVariant = "cpu-texture" | "gpu-tiled" | "naive";
export const CONV2D_VARIANTS: readonly Conv2dVariant[] = ["cpu-texture", "gpu-tiled", "naive"];

export interface Conv2dOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
  groups?: number;
  /** Force a variant (tests run every variant on every adapter; benchmarks time the naive one). */
  variant?: Conv2dVariant;
}

/** Every size of one convolution, validated. */
export interface Conv2dGeometry {
  batch: number;
  inChannels: number;
  height: number;
  width: number;
  outChannels: number;
  kernelHeight: number;
  kernelWidth: number;
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
  dilationH: number;
  dilationW: number;
  groups: number;
  inPerGroup: number;
  outPerGroup: number;
  outHeight: number;
  outWidth: number;
}

function pairOf(
  op: string,
  name: string,
  value: number | [number, number] | undefined,
  fallback: number,
  minimum: number,
): [number, number] {
  const pair: [number, number] =
    value === undefined ? [fallback, fallback] : typeof value === "number" ? [value, value] : value;
  if (pair.length !== 2 || pair.some((item) => !Number.isInteger(item) || item < minimum)) {
    throw new OpError(op, `${name} must be an integer >= ${minimum} or a pair of them, got ${String(value)}`);
  }
  return pair;
}

/** Validates shapes and options; throws an OpError naming the op and the shapes. */
export function conv2dGeometry(
  op: string,
  inputShape: Shape,
  weightShape: Shape,
  options: Conv2dOptions = {},
): Conv2dGeometry {
  const shapes = { x: inputShape, w: weightShape };
  if (inputShape.length !== 4) throw new OpError(op, "input must be [N, C, H, W]", shapes);
  if (weightShape.length !== 4) throw new OpError(op, "weight must be [O, C/groups, kH, kW]", shapes);
  const groups = options.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1)
    throw new OpError(op, `groups must be a positive integer`, shapes);
  const [batch, inChannels, height, width] = inputShape;
  const [outChannels, inPerGroup, kernelHeight, kernelWidth] = weightShape;
  if (inPerGroup * groups !== inChannels) {
    throw new OpError(
      op,
      `input has ${inChannels} channels but the weight expects ${inPerGroup} x ${groups} groups`,
      shapes,
    );
  }
  if (outChannels % groups !== 0) {
    throw new OpError(op, `${outChannels} output channels are not divisible by ${groups} groups`, shapes);
  }
  const [strideH, strideW] = pairOf(op, "stride", options.stride, 1, 1);
  const [padH, padW] = pairOf(op, "padding", options.padding, 0, 0);
  const [dilationH, dilationW] = pairOf(op, "dilation", options.dilation, 1, 1);
  const outHeight = Math.floor((height + 2 * padH - dilationH * (kernelHeight - 1) - 1) / strideH) + 1;
  const outWidth = Math.floor((width + 2 * padW - dilationW * (kernelWidth - 1) - 1) / strideW) + 1;
  if (outHeight < 1 || outWidth < 1) {
    throw new OpError(
      op,
      `the dilated kernel is larger than the padded input (output ${outHeight}x${outWidth})`,
      shapes,
    );
  }
  return {
    batch,
    inChannels,
    height,
    width,
    outChannels,
    kernelHeight,
    kernelWidth,
    strideH,
    strideW,
    padH,
    padW,
    dilationH,
    dilationW,
    groups,
    inPerGroup,
    outPerGroup: outChannels / groups,
    outHeight,
    outWidth,
  };
}

export const conv2dOutputShape = (g: Conv2dGeometry): Shape => [
  g.batch,
  g.outChannels,
  g.outHeight,
  g.outWidth,
];

/** FLOPs (multiply-add = 2) and bytes touched of the forward pass; each backward pass costs the same FLOPs. */
export function conv2dCost(g: Conv2dGeometry): { flops: number; bytes: number } {
  const taps = g.inPerGroup * g.kernelHeight * g.kernelWidth;
  const outputs = g.batch * g.outChannels * g.outHeight * g.outWidth;
  const inputs = g.batch * g.inChannels * g.height * g.width;
  return { flops: 2 * outputs * taps, bytes: 4 * (inputs + g.outChannels * taps + outputs) };
}

/** True for convolutions that are a plain GEMM over channels (1x1 kernel, stride 1, no padding). */
export function isPointwiseConv2d(g: Conv2dGeometry): boolean {
  return (
    g.kernelHeight === 1 &&
    g.kernelWidth === 1 &&
    g.strideH === 1 &&
    g.strideW === 1 &&
    g.padH === 0 &&
    g.padW === 0
  );
}

// ---------------------------------------------------------------------------------------------------
// Float64 reference (the specification every variant is tested against).

export const conv2dReference = {
  forward(
    x: Float64Array,
    inputShape: Shape,
    w: Float64Array,
    weightShape: Shape,
    bias: Float64Array | null,
    options: Conv2dOptions = {},
  ): Float64Array {
    const g = conv2dGeometry("conv2dReference", inputShape, weightShape, options);
    const y = new Float64Array(g.batch * g.outChannels * g.outHeight * g.outWidth);
    forEachTap(g, (yIndex, xIndex, wIndex) => {
      y[yIndex] += x[xIndex] * w[wIndex];
    });
    if (bias) {
      const plane = g.outHeight * g.outWidth;
      for (let index = 0; index < y.length; index++)
        y[index] += bias[Math.floor(index / plane) % g.outChannels];
    }
    return y;
  },
  backwardInput(
    gradOutput: Float64Array,
    inputShape: Shape,
    w: Float64Array,
    weightShape: Shape,
    options: Conv2dOptions = {},
  ): Float64Array {
    const g = conv2dGeometry("conv2dReference", inputShape, weightShape, options);
    const gradInput = new Float64Array(g.batch * g.inChannels * g.height * g.width);
    forEachTap(g, (yIndex, xIndex, wIndex) => {
      gradInput[xIndex] += gradOutput[yIndex] * w[wIndex];
    });
    return gradInput;
  },
  backwardWeight(
    gradOutput: Float64Array,
    x: Float64Array,
    inputShape: Shape,
    weightShape: Shape,
    options: Conv2dOptions = {},
  ): Float64Array {
    const g = conv2dGeometry("conv2dReference", inputShape, weightShape, options);
    const gradWeight = new Float64Array(g.outChannels * g.inPerGroup * g.kernelHeight * g.kernelWidth);
    forEachTap(g, (yIndex, xIndex, wIndex) => {
      gradWeight[wIndex] += gradOutput[yIndex] * x[xIndex];
    });
    return gradWeight;
  },
  backwardBias(gradOutput: Float64Array, outputShape: Shape): Float64Array {
    const [batch, channels, height, width] = outputShape;
    const gradBias = new Float64Array(channels);
    for (let index = 0; index < batch * channels * height * width; index++) {
      gradBias[Math.floor(index / (height * width)) % channels] += gradOutput[index];
    }
    return gradBias;
  },
};

/** Calls `visit(yIndex, xIndex, wIndex)` for every (output, input, weight) triple of the convolution. */
function forEachTap(
  g: Conv2dGeometry,
  visit: (yIndex: number, xIndex: number, wIndex: number) => void,
): void {
  for (let n = 0; n < g.batch; n++)
    for (let o = 0; o < g.outChannels; o++) {
      const group = Math.floor(o / g.outPerGroup);
      for (let oy = 0; oy < g.outHeight; oy++)
        for (let ox = 0; ox < g.outWidth; ox++) {
          const yIndex = ((n * g.outChannels + o) * g.outHeight + oy) * g.outWidth + ox;
          for (let c = 0; c < g.inPerGroup; c++)
            for (let ky = 0; ky < g.kernelHeight; ky++) {
              const iy = oy * g.strideH - g.padH + ky * g.dilationH;
              if (iy < 0 || iy >= g.height) continue;
              for (let kx = 0; kx < g.kernelWidth; kx++) {
                const ix = ox * g.strideW - g.padW + kx * g.dilationW;
                if (ix < 0 || ix >= g.width) continue;
                const xIndex = ((n * g.inChannels + group * g.inPerGroup + c) * g.height + iy) * g.width + ix;
                const wIndex = ((o * g.inPerGroup + c) * g.kernelHeight + ky) * g.kernelWidth + kx;
                visit(yIndex, xIndex, wIndex);
              }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Uniforms shared by every kernel: the geometry first, then each kernel's own fields.

const GEOMETRY_FIELDS = `N: u32, C: u32, H: u32, W: u32, O: u32, OH: u32, OW: u32, groups: u32,
  Cg: u32, Og: u32, kH: u32, kW: u32, sH: u32, sW: u32, pH: u32, pW: u32, dH: u32, dW: u32`;

function geometryParams(g: Conv2dGeometry): Params {
  return new Params().u32(
    g.batch,
    g.inChannels,
    g.height,
    g.width,
    g.outChannels,
    g.outHeight,
    g.outWidth,
    g.groups,
    g.inPerGroup,
    g.outPerGroup,
    g.kernelHeight,
    g.kernelWidth,
    g.strideH,
    g.strideW,
    g.padH,
    g.padW,
    g.dilationH,
    g.dilationW,
  );
}

// ---------------------------------------------------------------------------------------------------
// Naive kernels: one output element per invocation, plain loops. The reference the benchmarks time.

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

// ---------------------------------------------------------------------------------------------------
// gpu-tiled: one implicit-GEMM template, C[batch][m][n] = sum_k A(m, k) B(k, n), with 64x64 tiles of
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
const TILED_FORWARD = {
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
const TILED_BACKWARD_INPUT = {
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
const TILED_BACKWARD_WEIGHT = {
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
function tiledSource(
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

function tiledParams(
  g: Conv2dGeometry,
  m: number,
  columns: number,
  k: number,
  chunk: number,
  hasBias: boolean,
) {
  return geometryParams(g).u32(m, columns, k, chunk, hasBias ? 1 : 0);
}

function tiledWorkgroups(op: string, m: number, columns: number, batches: number): [number, number, number] {
  const workgroups: [number, number, number] = [Math.ceil(columns / 64), Math.ceil(m / 64), batches];
  if (batches > 65535) throw new OpError(op, `${batches} batches x groups exceed the dispatch limit`);
  return workgroups;
}

// ---------------------------------------------------------------------------------------------------
// cpu-texture: operands packed into rgba32float textures, four channels per texel.
//
// A packed tensor is a set of planes (n, group, channel quad), each a zero-padded H' x W' image of
// texels, laid out side by side in rows of `planesPerRow` planes so large tensors fit the 2-D limit.

interface PlaneLayout {
  planeHeight: number;
  planeWidth: number;
  planesPerRow: number;
  textureWidth: number;
  textureHeight: number;
}

function planeLayout(
  gpu: Gpu,
  op: string,
  planes: number,
  planeHeight: number,
  planeWidth: number,
  operands: Record<string, Shape | Tensor>,
): PlaneLayout {
  const limit = gpu.limits.maxTextureDimension2D;
  const planesPerRow = Math.max(1, Math.min(planes, Math.floor(limit / planeWidth)));
  const layout = {
    planeHeight,
    planeWidth,
    planesPerRow,
    textureWidth: planesPerRow * planeWidth,
    textureHeight: Math.ceil(planes / planesPerRow) * planeHeight,
  };
  if (layout.textureWidth > limit || layout.textureHeight > limit) {
    throw new OpError(
      op,
      `variant cpu-texture needs a ${layout.textureWidth}x${layout.textureHeight} texture, over this adapter's ${limit} limit`,
      operands,
    );
  }
  return layout;
}

/** Idle scratch textures kept for reuse beyond this many bytes are destroyed (oldest first). */
export const CONV2D_SCRATCH_IDLE_BYTES = 256 * 1024 * 1024;

/**
 * Scratch textures, reused by size (like the buffer pool). A texture goes back to the pool as soon as
 * the dispatches that read it are recorded: later users come later in queue order.
 */
class ScratchTextures {
  private readonly idle = new Map<string, GPUTexture[]>();
  private idleBytes = 0;
  constructor(private readonly gpu: Gpu) {}

  acquire(width: number, height: number): GPUTexture {
    const texture = this.idle.get(`${width}x${height}`)?.pop();
    if (texture) {
      this.idleBytes -= bytesOf(texture);
      return texture;
    }
    return this.gpu.device.createTexture({
      size: [width, height],
      format: "rgba32float",
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING,
      label: "conv2d scratch",
    });
  }

  release(texture: GPUTexture): void {
    const key = `${texture.width}x${texture.height}`;
    let list = this.idle.get(key);
    if (!list) this.idle.set(key, (list = []));
    list.push(texture);
    this.idleBytes += bytesOf(texture);
    if (this.idleBytes > CONV2D_SCRATCH_IDLE_BYTES) this.trim(CONV2D_SCRATCH_IDLE_BYTES / 2);
  }

  /** Destroys idle textures until at most `keepBytes` remain. */
  trim(keepBytes: number): void {
    // Recorded dispatches may still read these textures: submit them before destroying.
    this.gpu.flush();
    for (const [key, list] of this.idle) {
      while (list.length > 0 && this.idleBytes > keepBytes) {
        const texture = list.shift()!;
        this.idleBytes -= bytesOf(texture);
        texture.destroy();
      }
      if (list.length === 0) this.idle.delete(key);
    }
  }
}

const bytesOf = (texture: GPUTexture) => texture.width * texture.height * 16;

const scratchByGpu = new WeakMap<Gpu, ScratchTextures>();
function scratchTextures(gpu: Gpu): ScratchTextures {
  let scratch = scratchByGpu.get(gpu);
  if (!scratch) scratchByGpu.set(gpu, (scratch = new ScratchTextures(gpu)));
  return scratch;
}

/** Frees the cpu-texture variant's idle packing textures (e.g. between training and sampling). */
export function releaseConv2dScratch(gpu: Gpu): void {
  scratchByGpu.get(gpu)?.trim(0);
}

const PLANE_ORIGIN_WGSL = `
fn planeOrigin(plane: u32, planesPerRow: u32, planeWidth: u32, planeHeight: u32) -> vec2<u32> {
  return vec2<u32>((plane % planesPerRow) * planeWidth, (plane / planesPerRow) * planeHeight);
}
fn nextPlane(origin: vec2<u32>, planesPerRow: u32, planeWidth: u32, planeHeight: u32) -> vec2<u32> {
  let wraps = origin.x + planeWidth >= planesPerRow * planeWidth;
  return select(vec2<u32>(origin.x + planeWidth, origin.y), vec2<u32>(0u, origin.y + planeHeight), wraps);
}`;

/** NCHW buffer -> packed planes (n, group, quad): texel = channels 4*quad..4*quad+3 of the group. */
export const CONV2D_PACK_WGSL = `
@group(0) @binding(0) var<storage, read> source: array<f32>;
@group(0) @binding(1) var packedPlanes: texture_storage_2d<rgba32float, write>;
struct Params { N: u32, groups: u32, channelsPerGroup: u32, quads: u32, H: u32, W: u32,
  planeHeight: u32, planeWidth: u32, padTop: u32, padLeft: u32, planesPerRow: u32, total: u32 }
@group(0) @binding(2) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
${PLANE_ORIGIN_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= p.total) { return; }
  let px = index % p.planeWidth;
  let py = (index / p.planeWidth) % p.planeHeight;
  let plane = index / (p.planeWidth * p.planeHeight);
  let quad = plane % p.quads;
  let image = plane / p.quads; // n * groups + group
  let iy = i32(py) - i32(p.padTop);
  let ix = i32(px) - i32(p.padLeft);
  var texel = vec4<f32>(0.0);
  if (iy >= 0 && iy < i32(p.H) && ix >= 0 && ix < i32(p.W)) {
    for (var i = 0u; i < 4u; i++) {
      let c = quad * 4u + i;
      if (c < p.channelsPerGroup) {
        texel[i] = source[((image * p.channelsPerGroup + c) * p.H + u32(iy)) * p.W + u32(ix)];
      }
    }
  }
  let origin = planeOrigin(plane, p.planesPerRow, p.planeWidth, p.planeHeight);
  textureStore(packedPlanes, origin + vec2<u32>(px, py), texel);
}`;

interface PackedPlanes {
  texture: GPUTexture;
  layout: PlaneLayout;
}

function packPlanes(
  gpu: Gpu,
  op: string,
  source: Tensor,
  groups: number,
  channelsPerGroup: number,
  padding: { top: number; left: number; planeHeight: number; planeWidth: number },
): PackedPlanes {
  const [batch, , height, width] = source.shape;
  const quads = Math.ceil(channelsPerGroup / 4);
  const planes = batch * groups * quads;
  const layout = planeLayout(gpu, op, planes, padding.planeHeight, padding.planeWidth, { source });
  const texture = scratchTextures(gpu).acquire(layout.textureWidth, layout.textureHeight);
  const total = planes * padding.planeHeight * padding.planeWidth;
  launch(
    gpu,
    { name: "conv2dPack", code: CONV2D_PACK_WGSL },
    {
      bindings: [source, texture.createView()],
      params: new Params().u32(
        batch,
        groups,
        channelsPerGroup,
        quads,
        height,
        width,
        padding.planeHeight,
        padding.planeWidth,
        padding.top,
        padding.left,
        layout.planesPerRow,
        total,
      ),
      workgroups: grid(total, 64),
      flops: 0,
      bytes: 4 * source.size + 16 * total,
    },
  );
  return { texture, layout };
}

/** Weights -> texture; texel (tap index, row) holds four consecutive channels along `quadAxis`:
 * "input": texel (quad * kH*kW + tap, o) = w[o][4*quad..+3][tap] (forward);
 * "output": texel (quad * kH*kW + tap, group*Cg + c) = w[group*Og + 4*quad..+3][c][tap] (input gradient). */
export const CONV2D_PACK_WEIGHTS_WGSL = `
@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var packedWeights: texture_storage_2d<rgba32float, write>;
struct Params { ${GEOMETRY_FIELDS}, quadOverOutputs: u32, columns: u32, total: u32 }
@group(0) @binding(2) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= p.total) { return; }
  let column = index % p.columns;
  let row = index / p.columns;
  let taps = p.kH * p.kW;
  let tap = column % taps;
  let quad = column / taps;
  var texel = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    if (p.quadOverOutputs == 0u) {
      let c = quad * 4u + i;
      if (c < p.Cg) { texel[i] = w[(row * p.Cg + c) * taps + tap]; }
    } else {
      let o = quad * 4u + i;
      if (o < p.Og) { texel[i] = w[(((row / p.Cg) * p.Og + o) * p.Cg + row % p.Cg) * taps + tap]; }
    }
  }
  textureStore(packedWeights, vec2<u32>(column, row), texel);
}`;

function packWeights(
  gpu: Gpu,
  op: string,
  g: Conv2dGeometry,
  w: Tensor,
  quadOverOutputs: boolean,
): GPUTexture {
  const taps = g.kernelHeight * g.kernelWidth;
  const columns = Math.ceil((quadOverOutputs ? g.outPerGroup : g.inPerGroup) / 4) * taps;
  const rows = quadOverOutputs ? g.inChannels : g.outChannels;
  const limit = gpu.limits.maxTextureDimension2D;
  if (columns > limit || rows > limit) {
    throw new OpError(
      op,
      `variant cpu-texture needs a ${columns}x${rows} weight texture, over the ${limit} limit`,
      {
        w,
      },
    );
  }
  const texture = scratchTextures(gpu).acquire(columns, rows);
  launch(
    gpu,
    { name: "conv2dPack", code: CONV2D_PACK_WEIGHTS_WGSL },
    {
      bindings: [w, texture.createView()],
      params: geometryParams(g).u32(quadOverOutputs ? 1 : 0, columns, columns * rows),
      workgroups: grid(columns * rows, 64),
      flops: 0,
      bytes: 4 * w.size + 16 * columns * rows,
    },
  );
  return texture;
}

/** Eight dot products of one weight texel with pixel texels 0-3 and 4-7 (helper of the CPU kernels). */
const DOTS_WGSL = `
fn dots(weights: vec4<f32>, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(dot(weights, a), dot(weights, b), dot(weights, c), dot(weights, d));
}`;

/**
 * Forward, CPU adapters. Invocation = 8 output channels x 8 output pixels (flattened, so small or odd
 * images waste no lanes). Per (input-channel quad, ky, kx): 8 input texels + 8 weight texels, 256
 * multiply-adds in registers. `taps` are each pixel's top-left input position in the padded plane.
 */
const CONV2D_CPU_TEMPLATE = `
@group(0) @binding(0) var packedInput: texture_2d<f32>;
@group(0) @binding(1) var packedWeights: texture_2d<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
struct Params { ${GEOMETRY_FIELDS}, planeHeight: u32, planeWidth: u32, planesPerRow: u32,
  pixelBlocks: u32, channelBlocks: u32, total: u32, hasBias: u32 }
@group(0) @binding(4) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
${PLANE_ORIGIN_WGSL}
${DOTS_WGSL}
fn tapOf(pixel: u32) -> vec2<u32> {
  let q = min(pixel, p.OH * p.OW - 1u);
  return vec2<u32>((q % p.OW) * p.sW, (q / p.OW) * p.sH);
}
fn weightRow(group: u32, o: u32) -> u32 { return group * p.Og + min(o, p.Og - 1u); }
fn storeRow(n: u32, group: u32, o: u32, pixel0: u32, low: vec4<f32>, high: vec4<f32>) {
  if (o >= p.Og) { return; }
  let channel = group * p.Og + o;
  var offset = 0.0;
  if (p.hasBias != 0u) { offset = bias[channel]; }
  let pixels = p.OH * p.OW;
  let base = (n * p.O + channel) * pixels;
  for (var j = 0u; j < 4u; j++) {
    if (pixel0 + j < pixels) { y[base + pixel0 + j] = low[j] + offset; }
    if (pixel0 + 4u + j < pixels) { y[base + pixel0 + 4u + j] = high[j] + offset; }
  }
}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  let pixelBlock = index % p.pixelBlocks;
  let channelBlock = (index / p.pixelBlocks) % p.channelBlocks;
  let image = min(index / (p.pixelBlocks * p.channelBlocks), p.N * p.groups - 1u); // n * groups + group
  let group = image % p.groups;
  let pixel0 = pixelBlock * 8u;
  let o0 = channelBlock * 8u;
  let t0 = tapOf(pixel0); let t1 = tapOf(pixel0 + 1u); let t2 = tapOf(pixel0 + 2u); let t3 = tapOf(pixel0 + 3u);
  let t4 = tapOf(pixel0 + 4u); let t5 = tapOf(pixel0 + 5u); let t6 = tapOf(pixel0 + 6u); let t7 = tapOf(pixel0 + 7u);
  let r0 = weightRow(group, o0); let r1 = weightRow(group, o0 + 1u); let r2 = weightRow(group, o0 + 2u);
  let r3 = weightRow(group, o0 + 3u); let r4 = weightRow(group, o0 + 4u); let r5 = weightRow(group, o0 + 5u);
  let r6 = weightRow(group, o0 + 6u); let r7 = weightRow(group, o0 + 7u);
  // low*: pixels 0-3, high*: pixels 4-7, one pair per output channel.
  var low0 = vec4<f32>(0.0); var low1 = vec4<f32>(0.0); var low2 = vec4<f32>(0.0); var low3 = vec4<f32>(0.0);
  var low4 = vec4<f32>(0.0); var low5 = vec4<f32>(0.0); var low6 = vec4<f32>(0.0); var low7 = vec4<f32>(0.0);
  var high0 = vec4<f32>(0.0); var high1 = vec4<f32>(0.0); var high2 = vec4<f32>(0.0); var high3 = vec4<f32>(0.0);
  var high4 = vec4<f32>(0.0); var high5 = vec4<f32>(0.0); var high6 = vec4<f32>(0.0); var high7 = vec4<f32>(0.0);
  let quads = (p.Cg + 3u) / 4u;
  // Plane origins advance by one plane per quad; stepping avoids a per-lane division in the loop.
  var origin = planeOrigin(image * quads, p.planesPerRow, p.planeWidth, p.planeHeight);
  for (var quad = 0u; quad < quads; quad++) {
    {{tapLoops}}
        let shift = origin + vec2<u32>(kx * p.dW, ky * p.dH);
        let x0 = textureLoad(packedInput, t0 + shift, 0); let x1 = textureLoad(packedInput, t1 + shift, 0);
        let x2 = textureLoad(packedInput, t2 + shift, 0); let x3 = textureLoad(packedInput, t3 + shift, 0);
        let x4 = textureLoad(packedInput, t4 + shift, 0); let x5 = textureLoad(packedInput, t5 + shift, 0);
        let x6 = textureLoad(packedInput, t6 + shift, 0); let x7 = textureLoad(packedInput, t7 + shift, 0);
        let column = (quad * p.kH + ky) * p.kW + kx;
        var wv = textureLoad(packedWeights, vec2<u32>(column, r0), 0);
        low0 += dots(wv, x0, x1, x2, x3); high0 += dots(wv, x4, x5, x6, x7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r1), 0);
        low1 += dots(wv, x0, x1, x2, x3); high1 += dots(wv, x4, x5, x6, x7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r2), 0);
        low2 += dots(wv, x0, x1, x2, x3); high2 += dots(wv, x4, x5, x6, x7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r3), 0);
        low3 += dots(wv, x0, x1, x2, x3); high3 += dots(wv, x4, x5, x6, x7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r4), 0);
        low4 += dots(wv, x0, x1, x2, x3); high4 += dots(wv, x4, x5, x6, x7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r5), 0);
        low5 += dots(wv, x0, x1, x2, x3); high5 += dots(wv, x4, x5, x6, x7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r6), 0);
        low6 += dots(wv, x0, x1, x2, x3); high6 += dots(wv, x4, x5, x6, x7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r7), 0);
        low7 += dots(wv, x0, x1, x2, x3); high7 += dots(wv, x4, x5, x6, x7);
      }
    }
    origin = nextPlane(origin, p.planesPerRow, p.planeWidth, p.planeHeight);
  }
  if (index >= p.total) { return; }
  let n = image / p.groups;
  storeRow(n, group, o0, pixel0, low0, high0); storeRow(n, group, o0 + 1u, pixel0, low1, high1);
  storeRow(n, group, o0 + 2u, pixel0, low2, high2); storeRow(n, group, o0 + 3u, pixel0, low3, high3);
  storeRow(n, group, o0 + 4u, pixel0, low4, high4); storeRow(n, group, o0 + 5u, pixel0, low5, high5);
  storeRow(n, group, o0 + 6u, pixel0, low6, high6); storeRow(n, group, o0 + 7u, pixel0, low7, high7);
}`;

/** The forward kernel, and its 1x1 fast path: a plain GEMM over channel quads, no tap loops. */
export const CONV2D_CPU_WGSL = wgsl(CONV2D_CPU_TEMPLATE, {
  tapLoops: "for (var ky = 0u; ky < p.kH; ky++) { for (var kx = 0u; kx < p.kW; kx++) {",
});
export const CONV2D_CPU_1X1_WGSL = wgsl(CONV2D_CPU_TEMPLATE, { tapLoops: "{ let ky = 0u; { let kx = 0u;" });

/**
 * Input gradient, CPU adapters: a transposed convolution. Pixels are ordered by stride phase
 * (iy mod sH, ix mod sW) so that all pixels of an invocation, and nearly all of a workgroup, share
 * the set of taps that land on an output pixel: the others are skipped, not multiplied by zero.
 * Invocation = 8 input channels x 8 input pixels of one phase; gradOutput is packed with the padding
 * that keeps every read in bounds, weights packed four output channels per texel.
 */
export const CONV2D_BACKWARD_INPUT_CPU_WGSL = `
@group(0) @binding(0) var packedGradOutput: texture_2d<f32>;
@group(0) @binding(1) var packedWeights: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> gradInput: array<f32>;
struct Params { ${GEOMETRY_FIELDS}, planeHeight: u32, planeWidth: u32, planesPerRow: u32,
  padTop: u32, padLeft: u32, pixelBlocks: u32, channelBlocks: u32, total: u32 }
@group(0) @binding(3) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
${PLANE_ORIGIN_WGSL}
${DOTS_WGSL}
/** Rows/columns of the input that belong to phase \`phase\` along an axis of size \`size\`. */
fn phaseLength(size: u32, phase: u32, stride: u32) -> u32 {
  if (phase >= size) { return 0u; }
  return (size - phase + stride - 1u) / stride;
}
/** Output offset reached by tap k in this phase, or a sentinel when the stride skips it. */
fn tapOffset(phase: u32, pad: u32, k: u32, dilation: u32, stride: u32) -> i32 {
  let t = i32(phase + pad) - i32(k * dilation);
  let remainder = ((t % i32(stride)) + i32(stride)) % i32(stride);
  if (remainder != 0) { return -2147483647; }
  return (t - remainder) / i32(stride);
}
fn storeRow(n: u32, channel: u32, phaseY: u32, phaseX: u32, phaseWidth: u32, count: u32, pixel0: u32,
            low: vec4<f32>, high: vec4<f32>) {
  let base = (n * p.C + channel) * p.H * p.W;
  for (var j = 0u; j < 8u; j++) {
    let q = pixel0 + j;
    if (q < count) {
      let iy = phaseY + (q / phaseWidth) * p.sH;
      let ix = phaseX + (q % phaseWidth) * p.sW;
      var value = 0.0;
      if (j < 4u) { value = low[j]; } else { value = high[j - 4u]; }
      gradInput[base + iy * p.W + ix] = value;
    }
  }
}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  let pixelBlock = index % p.pixelBlocks;
  let channelBlock = (index / p.pixelBlocks) % p.channelBlocks;
  let phases = p.sH * p.sW;
  let phase = (index / (p.pixelBlocks * p.channelBlocks)) % phases;
  let image = min(index / (p.pixelBlocks * p.channelBlocks * phases), p.N * p.groups - 1u);
  let group = image % p.groups;
  let phaseY = phase / p.sW;
  let phaseX = phase % p.sW;
  let phaseWidth = max(phaseLength(p.W, phaseX, p.sW), 1u);
  let count = phaseLength(p.H, phaseY, p.sH) * phaseLength(p.W, phaseX, p.sW);
  let pixel0 = pixelBlock * 8u;
  // Each pixel's position (jx, jy) in the phase grid, shifted into the padded gradOutput plane.
  var taps: array<vec2<i32>, 8>;
  for (var j = 0u; j < 8u; j++) {
    let q = min(pixel0 + j, max(count, 1u) - 1u);
    taps[j] = vec2<i32>(i32(q % phaseWidth + p.padLeft), i32(q / phaseWidth + p.padTop));
  }
  let t0 = taps[0]; let t1 = taps[1]; let t2 = taps[2]; let t3 = taps[3];
  let t4 = taps[4]; let t5 = taps[5]; let t6 = taps[6]; let t7 = taps[7];
  let c0 = channelBlock * 8u;
  let rowBase = group * p.Cg;
  let r0 = rowBase + min(c0, p.Cg - 1u); let r1 = rowBase + min(c0 + 1u, p.Cg - 1u);
  let r2 = rowBase + min(c0 + 2u, p.Cg - 1u); let r3 = rowBase + min(c0 + 3u, p.Cg - 1u);
  let r4 = rowBase + min(c0 + 4u, p.Cg - 1u); let r5 = rowBase + min(c0 + 5u, p.Cg - 1u);
  let r6 = rowBase + min(c0 + 6u, p.Cg - 1u); let r7 = rowBase + min(c0 + 7u, p.Cg - 1u);
  var low0 = vec4<f32>(0.0); var low1 = vec4<f32>(0.0); var low2 = vec4<f32>(0.0); var low3 = vec4<f32>(0.0);
  var low4 = vec4<f32>(0.0); var low5 = vec4<f32>(0.0); var low6 = vec4<f32>(0.0); var low7 = vec4<f32>(0.0);
  var high0 = vec4<f32>(0.0); var high1 = vec4<f32>(0.0); var high2 = vec4<f32>(0.0); var high3 = vec4<f32>(0.0);
  var high4 = vec4<f32>(0.0); var high5 = vec4<f32>(0.0); var high6 = vec4<f32>(0.0); var high7 = vec4<f32>(0.0);
  let quads = (p.Og + 3u) / 4u;
  var plane = planeOrigin(image * quads, p.planesPerRow, p.planeWidth, p.planeHeight);
  for (var quad = 0u; quad < quads; quad++) {
    let origin = vec2<i32>(plane);
    for (var ky = 0u; ky < p.kH; ky++) {
      let offsetY = tapOffset(phaseY, p.pH, ky, p.dH, p.sH);
      if (offsetY == -2147483647) { continue; }
      for (var kx = 0u; kx < p.kW; kx++) {
        let offsetX = tapOffset(phaseX, p.pW, kx, p.dW, p.sW);
        if (offsetX == -2147483647) { continue; }
        let shift = origin + vec2<i32>(offsetX, offsetY);
        let g0 = textureLoad(packedGradOutput, t0 + shift, 0); let g1 = textureLoad(packedGradOutput, t1 + shift, 0);
        let g2 = textureLoad(packedGradOutput, t2 + shift, 0); let g3 = textureLoad(packedGradOutput, t3 + shift, 0);
        let g4 = textureLoad(packedGradOutput, t4 + shift, 0); let g5 = textureLoad(packedGradOutput, t5 + shift, 0);
        let g6 = textureLoad(packedGradOutput, t6 + shift, 0); let g7 = textureLoad(packedGradOutput, t7 + shift, 0);
        let column = (quad * p.kH + ky) * p.kW + kx;
        var wv = textureLoad(packedWeights, vec2<u32>(column, r0), 0);
        low0 += dots(wv, g0, g1, g2, g3); high0 += dots(wv, g4, g5, g6, g7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r1), 0);
        low1 += dots(wv, g0, g1, g2, g3); high1 += dots(wv, g4, g5, g6, g7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r2), 0);
        low2 += dots(wv, g0, g1, g2, g3); high2 += dots(wv, g4, g5, g6, g7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r3), 0);
        low3 += dots(wv, g0, g1, g2, g3); high3 += dots(wv, g4, g5, g6, g7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r4), 0);
        low4 += dots(wv, g0, g1, g2, g3); high4 += dots(wv, g4, g5, g6, g7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r5), 0);
        low5 += dots(wv, g0, g1, g2, g3); high5 += dots(wv, g4, g5, g6, g7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r6), 0);
        low6 += dots(wv, g0, g1, g2, g3); high6 += dots(wv, g4, g5, g6, g7);
        wv = textureLoad(packedWeights, vec2<u32>(column, r7), 0);
        low7 += dots(wv, g0, g1, g2, g3); high7 += dots(wv, g4, g5, g6, g7);
      }
    }
    plane = nextPlane(plane, p.planesPerRow, p.planeWidth, p.planeHeight);
  }
  if (index >= p.total || c0 >= p.Cg) { return; }
  let n = image / p.groups;
  let last = p.Cg - 1u;
  storeRow(n, rowBase + c0, phaseY, phaseX, phaseWidth, count, pixel0, low0, high0);
  if (c0 + 1u <= last) { storeRow(n, rowBase + c0 + 1u, phaseY, phaseX, phaseWidth, count, pixel0, low1, high1); }
  if (c0 + 2u <= last) { storeRow(n, rowBase + c0 + 2u, phaseY, phaseX, phaseWidth, count, pixel0, low2, high2); }
  if (c0 + 3u <= last) { storeRow(n, rowBase + c0 + 3u, phaseY, phaseX, phaseWidth, count, pixel0, low3, high3); }
  if (c0 + 4u <= last) { storeRow(n, rowBase + c0 + 4u, phaseY, phaseX, phaseWidth, count, pixel0, low4, high4); }
  if (c0 + 5u <= last) { storeRow(n, rowBase + c0 + 5u, phaseY, phaseX, phaseWidth, count, pixel0, low5, high5); }
  if (c0 + 6u <= last) { storeRow(n, rowBase + c0 + 6u, phaseY, phaseX, phaseWidth, count, pixel0, low6, high6); }
  if (c0 + 7u <= last) { storeRow(n, rowBase + c0 + 7u, phaseY, phaseX, phaseWidth, count, pixel0, low7, high7); }
}`;

/**
 * Weight gradient, CPU adapters. Invocation = 8 output channels x 2 column quads (a column quad is
 * four input channels at one tap), reducing over its chunk of output rows four pixels at a time:
 * 8 gradOutput texels (two quads of outputs x 4 pixels) and 8 input texels per step, each accumulator
 * update a 16-term contraction. gradOutput planes are padded to a multiple of 4 pixels wide with
 * zeros, so the tail of a row contributes nothing.
 */
export const CONV2D_BACKWARD_WEIGHT_CPU_WGSL = `
@group(0) @binding(0) var packedGradOutput: texture_2d<f32>;
@group(0) @binding(1) var packedInput: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
struct Params { ${GEOMETRY_FIELDS}, gradPlaneHeight: u32, gradPlaneWidth: u32, gradPlanesPerRow: u32,
  inputPlaneHeight: u32, inputPlaneWidth: u32, inputPlanesPerRow: u32,
  columnPairs: u32, channelBlocks: u32, splits: u32, rowsPerChunk: u32, total: u32 }
@group(0) @binding(3) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
${PLANE_ORIGIN_WGSL}
fn contract(d: vec4<f32>, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, e: vec4<f32>) -> vec4<f32> {
  return d.x * a + d.y * b + d.z * c + d.w * e;
}
fn storeColumn(split: u32, group: u32, o: u32, column: u32, value: vec4<f32>) {
  let taps = p.kH * p.kW;
  let quad = column / taps;
  let tap = column % taps;
  if (o >= p.Og) { return; }
  let base = (split * p.O + group * p.Og + o) * p.Cg * taps + tap;
  for (var i = 0u; i < 4u; i++) {
    if (quad * 4u + i < p.Cg) { partial[base + (quad * 4u + i) * taps] = value[i]; }
  }
}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  let columnPair = index % p.columnPairs;
  let channelBlock = (index / p.columnPairs) % p.channelBlocks;
  let split = (index / (p.columnPairs * p.channelBlocks)) % p.splits;
  let group = min(index / (p.columnPairs * p.channelBlocks * p.splits), p.groups - 1u);
  let taps = p.kH * p.kW;
  let inputQuads = (p.Cg + 3u) / 4u;
  let outputQuads = (p.Og + 3u) / 4u;
  let columns = inputQuads * taps;
  let columnA = min(columnPair * 2u, columns - 1u);
  let columnB = min(columnPair * 2u + 1u, columns - 1u);
  // Offsets of each column's tap inside an input plane, and its quad.
  let offsetA = vec2<u32>((columnA % taps % p.kW) * p.dW, (columnA % taps / p.kW) * p.dH);
  let offsetB = vec2<u32>((columnB % taps % p.kW) * p.dW, (columnB % taps / p.kW) * p.dH);
  let quadA = columnA / taps;
  let quadB = columnB / taps;
  let outputQuad0 = min(channelBlock * 2u, outputQuads - 1u);
  let outputQuad1 = min(channelBlock * 2u + 1u, outputQuads - 1u);
  var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
  var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0); var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
  var b0 = vec4<f32>(0.0); var b1 = vec4<f32>(0.0); var b2 = vec4<f32>(0.0); var b3 = vec4<f32>(0.0);
  var b4 = vec4<f32>(0.0); var b5 = vec4<f32>(0.0); var b6 = vec4<f32>(0.0); var b7 = vec4<f32>(0.0);
  let rowBegin = split * p.rowsPerChunk;
  let rowEnd = min(rowBegin + p.rowsPerChunk, p.N * p.OH);
  for (var row = rowBegin; row < rowEnd; row++) {
    let n = row / p.OH;
    let oy = row % p.OH;
    let image = n * p.groups + group;
    let gradRow = vec2<u32>(0u, oy);
    let grad0 = planeOrigin(image * outputQuads + outputQuad0, p.gradPlanesPerRow, p.gradPlaneWidth, p.gradPlaneHeight) + gradRow;
    let grad1 = planeOrigin(image * outputQuads + outputQuad1, p.gradPlanesPerRow, p.gradPlaneWidth, p.gradPlaneHeight) + gradRow;
    let inputRow = vec2<u32>(0u, oy * p.sH);
    let inputA = planeOrigin(image * inputQuads + quadA, p.inputPlanesPerRow, p.inputPlaneWidth, p.inputPlaneHeight) + inputRow + offsetA;
    let inputB = planeOrigin(image * inputQuads + quadB, p.inputPlanesPerRow, p.inputPlaneWidth, p.inputPlaneHeight) + inputRow + offsetB;
    for (var ox = 0u; ox < p.gradPlaneWidth; ox += 4u) {
      let d00 = textureLoad(packedGradOutput, grad0 + vec2<u32>(ox, 0u), 0);
      let d01 = textureLoad(packedGradOutput, grad0 + vec2<u32>(ox + 1u, 0u), 0);
      let d02 = textureLoad(packedGradOutput, grad0 + vec2<u32>(ox + 2u, 0u), 0);
      let d03 = textureLoad(packedGradOutput, grad0 + vec2<u32>(ox + 3u, 0u), 0);
      let d10 = textureLoad(packedGradOutput, grad1 + vec2<u32>(ox, 0u), 0);
      let d11 = textureLoad(packedGradOutput, grad1 + vec2<u32>(ox + 1u, 0u), 0);
      let d12 = textureLoad(packedGradOutput, grad1 + vec2<u32>(ox + 2u, 0u), 0);
      let d13 = textureLoad(packedGradOutput, grad1 + vec2<u32>(ox + 3u, 0u), 0);
      let xa0 = textureLoad(packedInput, inputA + vec2<u32>(ox * p.sW, 0u), 0);
      let xa1 = textureLoad(packedInput, inputA + vec2<u32>((ox + 1u) * p.sW, 0u), 0);
      let xa2 = textureLoad(packedInput, inputA + vec2<u32>((ox + 2u) * p.sW, 0u), 0);
      let xa3 = textureLoad(packedInput, inputA + vec2<u32>((ox + 3u) * p.sW, 0u), 0);
      let xb0 = textureLoad(packedInput, inputB + vec2<u32>(ox * p.sW, 0u), 0);
      let xb1 = textureLoad(packedInput, inputB + vec2<u32>((ox + 1u) * p.sW, 0u), 0);
      let xb2 = textureLoad(packedInput, inputB + vec2<u32>((ox + 2u) * p.sW, 0u), 0);
      let xb3 = textureLoad(packedInput, inputB + vec2<u32>((ox + 3u) * p.sW, 0u), 0);
      // Per output channel: its gradient at the 4 pixels, one component of each d texel.
      let e0 = vec4<f32>(d00.x, d01.x, d02.x, d03.x); let e1 = vec4<f32>(d00.y, d01.y, d02.y, d03.y);
      let e2 = vec4<f32>(d00.z, d01.z, d02.z, d03.z); let e3 = vec4<f32>(d00.w, d01.w, d02.w, d03.w);
      let e4 = vec4<f32>(d10.x, d11.x, d12.x, d13.x); let e5 = vec4<f32>(d10.y, d11.y, d12.y, d13.y);
      let e6 = vec4<f32>(d10.z, d11.z, d12.z, d13.z); let e7 = vec4<f32>(d10.w, d11.w, d12.w, d13.w);
      a0 += contract(e0, xa0, xa1, xa2, xa3); b0 += contract(e0, xb0, xb1, xb2, xb3);
      a1 += contract(e1, xa0, xa1, xa2, xa3); b1 += contract(e1, xb0, xb1, xb2, xb3);
      a2 += contract(e2, xa0, xa1, xa2, xa3); b2 += contract(e2, xb0, xb1, xb2, xb3);
      a3 += contract(e3, xa0, xa1, xa2, xa3); b3 += contract(e3, xb0, xb1, xb2, xb3);
      a4 += contract(e4, xa0, xa1, xa2, xa3); b4 += contract(e4, xb0, xb1, xb2, xb3);
      a5 += contract(e5, xa0, xa1, xa2, xa3); b5 += contract(e5, xb0, xb1, xb2, xb3);
      a6 += contract(e6, xa0, xa1, xa2, xa3); b6 += contract(e6, xb0, xb1, xb2, xb3);
      a7 += contract(e7, xa0, xa1, xa2, xa3); b7 += contract(e7, xb0, xb1, xb2, xb3);
    }
  }
  if (index >= p.total) { return; }
  let o0 = channelBlock * 8u;
  let hasColumnB = columnPair * 2u + 1u < columns;
  storeColumn(split, group, o0, columnA, a0); storeColumn(split, group, o0 + 1u, columnA, a1);
  storeColumn(split, group, o0 + 2u, columnA, a2); storeColumn(split, group, o0 + 3u, columnA, a3);
  storeColumn(split, group, o0 + 4u, columnA, a4); storeColumn(split, group, o0 + 5u, columnA, a5);
  storeColumn(split, group, o0 + 6u, columnA, a6); storeColumn(split, group, o0 + 7u, columnA, a7);
  if (hasColumnB) {
    storeColumn(split, group, o0, columnB, b0); storeColumn(split, group, o0 + 1u, columnB, b1);
    storeColumn(split, group, o0 + 2u, columnB, b2); storeColumn(split, group, o0 + 3u, columnB, b3);
    storeColumn(split, group, o0 + 4u, columnB, b4); storeColumn(split, group, o0 + 5u, columnB, b5);
    storeColumn(split, group, o0 + 6u, columnB, b6); storeColumn(split, group, o0 + 7u, columnB, b7);
  }
}`;

/** Sums `splits` partial results: out[i] = sum_s partial[s * size + i]. */
export const CONV2D_REDUCE_WGSL = `
@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> result: array<f32>;
struct Params { size: u32, splits: u32 }
@group(0) @binding(2) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= p.size) { return; }
  var sum = 0.0;
  for (var s = 0u; s < p.splits; s++) { sum += partial[s * p.size + index]; }
  result[index] = sum;
}`;

/** Bias gradient: one invocation per output channel, summing its N x OH x OW gradients. */
export const CONV2D_BACKWARD_BIAS_WGSL = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read_write> gradBias: array<f32>;
struct Params { N: u32, O: u32, pixels: u32 }
@group(0) @binding(2) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let o = linearIndex(gid, groups, 64u);
  if (o >= p.O) { return; }
  var sum = 0.0;
  for (var n = 0u; n < p.N; n++) {
    let base = (n * p.O + o) * p.pixels;
    for (var q = 0u; q < p.pixels; q++) { sum += gradOutput[base + q]; }
  }
  gradBias[o] = sum;
}`;

// ---------------------------------------------------------------------------------------------------
// Variant choice and texture plans.

/** Padding of the packed gradOutput planes so every tap of the transposed convolution reads in bounds. */
function transposedPadding(
  size: number,
  outSize: number,
  stride: number,
  pad: number,
  dilation: number,
  kernel: number,
): { before: number; after: number } {
  let before = 0;
  let after = 0;
  for (let phase = 0; phase < stride; phase++) {
    const length = Math.ceil((size - phase) / stride);
    if (length <= 0) continue;
    for (let k = 0; k < kernel; k++) {
      const t = phase + pad - k * dilation;
      if (((t % stride) + stride) % stride !== 0) continue;
      const offset = Math.floor(t / stride);
      before = Math.max(before, -offset);
      after = Math.max(after, length - 1 + offset - (outSize - 1));
    }
  }
  return { before, after };
}

interface CpuPlans {
  inputPlane: { height: number; width: number };
  gradPlane: { top: number; left: number; height: number; width: number };
  weightGradInputWidth: number;
}

function cpuPlans(g: Conv2dGeometry): CpuPlans {
  const vertical = transposedPadding(g.height, g.outHeight, g.strideH, g.padH, g.dilationH, g.kernelHeight);
  const horizontal = transposedPadding(g.width, g.outWidth, g.strideW, g.padW, g.dilationW, g.kernelWidth);
  const paddedOutWidth = Math.ceil(g.outWidth / 4) * 4;
  return {
    inputPlane: { height: g.height + 2 * g.padH, width: g.width + 2 * g.padW },
    gradPlane: {
      top: vertical.before,
      left: horizontal.before,
      height: g.outHeight + vertical.before + vertical.after,
      width: g.outWidth + horizontal.before + horizontal.after,
    },
    // The weight gradient reads whole 4-pixel steps; the input plane must cover the last one.
    weightGradInputWidth: Math.max(
      g.width + 2 * g.padW,
      (paddedOutWidth - 1) * g.strideW + (g.kernelWidth - 1) * g.dilationW + 1,
    ),
  };
}

/** Whether every texture the cpu-texture variant needs fits this adapter's 2-D texture limit. */
function cpuTexturesFit(gpu: Gpu, g: Conv2dGeometry): boolean {
  const limit = gpu.limits.maxTextureDimension2D;
  const plans = cpuPlans(g);
  const taps = g.kernelHeight * g.kernelWidth;
  const fits = (planes: number, height: number, width: number) => {
    if (width > limit || height > limit) return false;
    const perRow = Math.max(1, Math.min(planes, Math.floor(limit / width)));
    return Math.ceil(planes / perRow) * height <= limit;
  };
  const inputPlanes = g.batch * g.groups * Math.ceil(g.inPerGroup / 4);
  const outputPlanes = g.batch * g.groups * Math.ceil(g.outPerGroup / 4);
  return (
    fits(inputPlanes, plans.inputPlane.height, plans.weightGradInputWidth) &&
    fits(outputPlanes, plans.gradPlane.height, plans.gradPlane.width) &&
    fits(outputPlanes, g.outHeight, Math.ceil(g.outWidth / 4) * 4) &&
    Math.ceil(g.inPerGroup / 4) * taps <= limit &&
    Math.ceil(g.outPerGroup / 4) * taps <= limit &&
    g.outChannels <= limit &&
    g.inChannels <= limit
  );
}

/** The variant for this adapter and shape: texture-packed register blocking on CPU adapters (when its
 * textures fit), workgroup-memory tiles everywhere else. */
export function chooseConv2dVariant(gpu: Gpu, g: Conv2dGeometry): Conv2dVariant {
  return gpu.kind === "cpu" && cpuTexturesFit(gpu, g) ? "cpu-texture" : "gpu-tiled";
}

function resolveVariant(
  gpu: Gpu,
  op: string,
  g: Conv2dGeometry,
  options: Conv2dOptions,
  operands: Record<string, Tensor>,
) {
  const variant = options.variant ?? chooseConv2dVariant(gpu, g);
  if (!CONV2D_VARIANTS.includes(variant)) {
    throw new OpError(op, `unknown variant "${variant}" (expected ${CONV2D_VARIANTS.join(", ")})`, operands);
  }
  if (variant === "cpu-texture" && !cpuTexturesFit(gpu, g)) {
    throw new OpError(
      op,
      `variant cpu-texture needs textures larger than this adapter's ${gpu.limits.maxTextureDimension2D} limit`,
      operands,
    );
  }
  return variant;
}

function requireF32(op: string, operands: Record<string, Tensor>): void {
  for (const [name, tensor] of Object.entries(operands)) {
    if (tensor.dtype !== "f32") throw new OpError(op, `needs f32 ${name}, got ${tensor.dtype}`, operands);
  }
}

/** Refuses an output larger than one storage buffer, naming the op (before any allocation). */
function checkOutputFits(gpu: Gpu, op: string, shape: Shape, operands: Record<string, Tensor>): void {
  const bytes = 4 * shape.reduce((product, dim) => product * dim, 1);
  const limit = Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
  if (bytes > limit) {
    throw new OpError(
      op,
      `output [${shape.join(", ")}] needs ${bytes} bytes, more than this adapter's largest storage buffer (${limit} bytes)`,
      operands,
    );
  }
}

function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((dim, index) => dim === b[index]);
}

// ---------------------------------------------------------------------------------------------------
// Forward.

/**
 * y = conv2d(x, w) + bias: x [N, C, H, W], w [O, C/groups, kH, kW], bias [O] or none; y [N, O, OH, OW].
 * Recorded on the autograd tape when x, w or bias needs a gradient.
 */
export function conv2d(x: Tensor, w: Tensor, bias?: Tensor | null, options: Conv2dOptions = {}): Tensor {
  const operands: Record<string, Tensor> = bias ? { x, w, bias } : { x, w };
  requireF32("conv2d", operands);
  const g = conv2dGeometry("conv2d", x.shape, w.shape, options);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== g.outChannels)) {
    throw new OpError("conv2d", `bias must be [${g.outChannels}]`, operands);
  }
  const gpu = x.gpu;
  const variant = resolveVariant(gpu, "conv2d", g, options, operands);
  checkOutputFits(gpu, "conv2d", conv2dOutputShape(g), operands);
  const y = Tensor.empty(gpu, conv2dOutputShape(g));
  const cost = conv2dCost(g);
  const hasBias = bias ? 1 : 0;
  // Kernels without a bias bind the weight in its slot (any read-only buffer will do).
  const biasBinding = bias ?? w;
  const pointwise = isPointwiseConv2d(g);
  if (variant === "naive") {
    launch(
      gpu,
      { name: "conv2d", variant, code: CONV2D_NAIVE_WGSL },
      {
        bindings: [x, w, biasBinding, y],
        params: geometryParams(g).u32(hasBias),
        workgroups: grid(y.size, 64),
        ...cost,
      },
    );
  } else if (variant === "gpu-tiled") {
    const taps = g.inPerGroup * g.kernelHeight * g.kernelWidth;
    const pixels = g.outHeight * g.outWidth;
    launch(
      gpu,
      {
        name: "conv2d",
        variant: pointwise ? "gpu-tiled-1x1" : variant,
        code: tiledSource(TILED_FORWARD, "forward", pointwise),
      },
      {
        bindings: [x, w, biasBinding, y],
        params: tiledParams(g, g.outPerGroup, pixels, taps, taps, bias !== undefined && bias !== null),
        workgroups: tiledWorkgroups("conv2d", g.outPerGroup, pixels, g.batch * g.groups),
        ...cost,
      },
    );
  } else {
    const plans = cpuPlans(g);
    const input = packPlanes(gpu, "conv2d", x, g.groups, g.inPerGroup, {
      top: g.padH,
      left: g.padW,
      planeHeight: plans.inputPlane.height,
      planeWidth: plans.inputPlane.width,
    });
    const weights = packWeights(gpu, "conv2d", g, w, false);
    const pixelBlocks = Math.ceil((g.outHeight * g.outWidth) / 8);
    const channelBlocks = Math.ceil(g.outPerGroup / 8);
    const total = g.batch * g.groups * pixelBlocks * channelBlocks;
    launch(
      gpu,
      {
        name: "conv2d",
        variant: pointwise ? "cpu-texture-1x1" : variant,
        code: pointwise ? CONV2D_CPU_1X1_WGSL : CONV2D_CPU_WGSL,
      },
      {
        bindings: [input.texture.createView(), weights.createView(), biasBinding, y],
        params: geometryParams(g).u32(
          input.layout.planeHeight,
          input.layout.planeWidth,
          input.layout.planesPerRow,
          pixelBlocks,
          channelBlocks,
          total,
          hasBias,
        ),
        workgroups: grid(total, 64),
        ...cost,
      },
    );
    scratchTextures(gpu).release(input.texture);
    scratchTextures(gpu).release(weights);
  }
  const inputs = bias ? [x, w, bias] : [x, w];
  if (needsGrad(...inputs)) {
    const forced = { ...options, variant };
    record("conv2d", inputs, [y], ([gradOutput]) => [
      x.requiresGrad ? conv2dBackwardInput(gradOutput!, w, x.shape, forced) : null,
      w.requiresGrad ? conv2dBackwardWeight(gradOutput!, x, w.shape, forced) : null,
      ...(bias ? [bias.requiresGrad ? conv2dBackwardBias(gradOutput!) : null] : []),
    ]);
  }
  return y;
}

// ---------------------------------------------------------------------------------------------------
// Backward.

function checkGradOutput(
  op: string,
  gradOutput: Tensor,
  g: Conv2dGeometry,
  operands: Record<string, Tensor>,
) {
  const expected = conv2dOutputShape(g);
  if (!sameShape(gradOutput.shape, expected)) {
    throw new OpError(op, `gradOutput must be [${expected.join(", ")}]`, operands);
  }
}

/** Gradient with respect to the input: dx [N, C, H, W] from gradOutput [N, O, OH, OW] and w. */
export function conv2dBackwardInput(
  gradOutput: Tensor,
  w: Tensor,
  inputShape: Shape,
  options: Conv2dOptions = {},
): Tensor {
  const op = "conv2dBackwardInput";
  const operands = { gradOutput, w };
  requireF32(op, operands);
  const g = conv2dGeometry(op, inputShape, w.shape, options);
  checkGradOutput(op, gradOutput, g, operands);
  const gpu = w.gpu;
  const variant = resolveVariant(gpu, op, g, options, operands);
  const gradInput = Tensor.empty(gpu, inputShape);
  const cost = conv2dCost(g);
  if (variant === "naive") {
    launch(
      gpu,
      { name: op, variant, code: CONV2D_BACKWARD_INPUT_NAIVE_WGSL },
      {
        bindings: [gradOutput, w, gradInput],
        params: geometryParams(g),
        workgroups: grid(gradInput.size, 64),
        ...cost,
      },
    );
  } else if (variant === "gpu-tiled") {
    const pointwise = isPointwiseConv2d(g);
    const taps = g.outPerGroup * g.kernelHeight * g.kernelWidth;
    const pixels = g.height * g.width;
    launch(
      gpu,
      {
        name: op,
        variant: pointwise ? "gpu-tiled-1x1" : variant,
        code: tiledSource(TILED_BACKWARD_INPUT, "backwardInput", pointwise),
      },
      {
        bindings: [gradOutput, w, gradInput],
        params: tiledParams(g, g.inPerGroup, pixels, taps, taps, false),
        workgroups: tiledWorkgroups(op, g.inPerGroup, pixels, g.batch * g.groups),
        ...cost,
      },
    );
  } else {
    const plan = cpuPlans(g).gradPlane;
    const packed = packPlanes(gpu, op, gradOutput, g.groups, g.outPerGroup, {
      top: plan.top,
      left: plan.left,
      planeHeight: plan.height,
      planeWidth: plan.width,
    });
    const weights = packWeights(gpu, op, g, w, true);
    const largestPhase = Math.ceil(g.height / g.strideH) * Math.ceil(g.width / g.strideW);
    const pixelBlocks = Math.ceil(largestPhase / 8);
    const channelBlocks = Math.ceil(g.inPerGroup / 8);
    const total = g.batch * g.groups * g.strideH * g.strideW * channelBlocks * pixelBlocks;
    launch(
      gpu,
      { name: op, variant, code: CONV2D_BACKWARD_INPUT_CPU_WGSL },
      {
        bindings: [packed.texture.createView(), weights.createView(), gradInput],
        params: geometryParams(g).u32(
          packed.layout.planeHeight,
          packed.layout.planeWidth,
          packed.layout.planesPerRow,
          plan.top,
          plan.left,
          pixelBlocks,
          channelBlocks,
          total,
        ),
        workgroups: grid(total, 64),
        ...cost,
      },
    );
    scratchTextures(gpu).release(packed.texture);
    scratchTextures(gpu).release(weights);
  }
  return gradInput;
}

/** How many chunks to split a reduction of `length` into so that `lanes * splits` reaches `target`. */
function splitCount(lanes: number, length: number, target: number): number {
  return Math.max(1, Math.min(length, Math.ceil(target / Math.max(lanes, 1))));
}

/** Gradient with respect to the weight: dw [O, C/groups, kH, kW] = sum over n, oy, ox of
 * gradOutput x input window; the sum is split into chunks reduced in a second pass. */
export function conv2dBackwardWeight(
  gradOutput: Tensor,
  x: Tensor,
  weightShape: Shape,
  options: Conv2dOptions = {},
): Tensor {
  const op = "conv2dBackwardWeight";
  const operands = { gradOutput, x };
  requireF32(op, operands);
  const g = conv2dGeometry(op, x.shape, weightShape, options);
  checkGradOutput(op, gradOutput, g, operands);
  const gpu = x.gpu;
  const variant = resolveVariant(gpu, op, g, options, operands);
  const gradWeight = Tensor.empty(gpu, weightShape);
  const cost = conv2dCost(g);
  const taps = g.inPerGroup * g.kernelHeight * g.kernelWidth;
  if (variant === "naive") {
    launch(
      gpu,
      { name: op, variant, code: CONV2D_BACKWARD_WEIGHT_NAIVE_WGSL },
      {
        bindings: [gradOutput, x, gradWeight],
        params: geometryParams(g),
        workgroups: grid(gradWeight.size, 64),
        ...cost,
      },
    );
    return gradWeight;
  }
  let splits: number;
  let partial: Tensor;
  if (variant === "gpu-tiled") {
    const reduction = g.batch * g.outHeight * g.outWidth;
    const tiles = Math.ceil(g.outPerGroup / 64) * Math.ceil(taps / 64) * g.groups;
    const wanted = splitCount(tiles, Math.ceil(reduction / 64), 128);
    const chunk = Math.ceil(Math.ceil(reduction / wanted) / 16) * 16;
    splits = Math.ceil(reduction / chunk);
    partial = splits === 1 ? gradWeight : Tensor.empty(gpu, [splits, gradWeight.size]);
    const pointwise = isPointwiseConv2d(g);
    launch(
      gpu,
      {
        name: op,
        variant: pointwise ? "gpu-tiled-1x1" : variant,
        code: tiledSource(TILED_BACKWARD_WEIGHT, "backwardWeight", pointwise),
      },
      {
        bindings: [gradOutput, x, partial],
        params: tiledParams(g, g.outPerGroup, taps, reduction, chunk, false),
        workgroups: tiledWorkgroups(op, g.outPerGroup, taps, g.groups * splits),
        ...cost,
      },
    );
  } else {
    const plans = cpuPlans(g);
    const paddedOutWidth = Math.ceil(g.outWidth / 4) * 4;
    const grad = packPlanes(gpu, op, gradOutput, g.groups, g.outPerGroup, {
      top: 0,
      left: 0,
      planeHeight: g.outHeight,
      planeWidth: paddedOutWidth,
    });
    const input = packPlanes(gpu, op, x, g.groups, g.inPerGroup, {
      top: g.padH,
      left: g.padW,
      planeHeight: plans.inputPlane.height,
      planeWidth: plans.weightGradInputWidth,
    });
    const columnPairs = Math.ceil((Math.ceil(g.inPerGroup / 4) * g.kernelHeight * g.kernelWidth) / 2);
    const channelBlocks = Math.ceil(g.outPerGroup / 8);
    const rows = g.batch * g.outHeight;
    const wanted = splitCount(g.groups * channelBlocks * columnPairs, rows, 2048);
    const rowsPerChunk = Math.ceil(rows / wanted);
    splits = Math.ceil(rows / rowsPerChunk);
    partial = splits === 1 ? gradWeight : Tensor.empty(gpu, [splits, gradWeight.size]);
    const total = g.groups * splits * channelBlocks * columnPairs;
    launch(
      gpu,
      {
        name: op,
        variant: isPointwiseConv2d(g) ? "cpu-texture-1x1" : variant,
        code: CONV2D_BACKWARD_WEIGHT_CPU_WGSL,
      },
      {
        bindings: [grad.texture.createView(), input.texture.createView(), partial],
        params: geometryParams(g).u32(
          grad.layout.planeHeight,
          grad.layout.planeWidth,
          grad.layout.planesPerRow,
          input.layout.planeHeight,
          input.layout.planeWidth,
          input.layout.planesPerRow,
          columnPairs,
          channelBlocks,
          splits,
          rowsPerChunk,
          total,
        ),
        workgroups: grid(total, 64),
        ...cost,
      },
    );
    scratchTextures(gpu).release(grad.texture);
    scratchTextures(gpu).release(input.texture);
  }
  if (splits > 1) {
    launch(
      gpu,
      { name: "conv2dReduce", code: CONV2D_REDUCE_WGSL },
      {
        bindings: [partial, gradWeight],
        params: new Params().u32(gradWeight.size, splits),
        workgroups: grid(gradWeight.size, 64),
        flops: partial.size,
        bytes: 4 * (partial.size + gradWeight.size),
      },
    );
    partial.release();
  }
  return gradWeight;
}

/** Gradient with respect to the bias: db [O] = sum of gradOutput over n, oy, ox. */
export function conv2dBackwardBias(gradOutput: Tensor): Tensor {
  const op = "conv2dBackwardBias";
  requireF32(op, { gradOutput });
  if (gradOutput.rank !== 4) throw new OpError(op, "gradOutput must be [N, O, OH, OW]", { gradOutput });
  const [batch, channels, height, width] = gradOutput.shape;
  const gradBias = Tensor.empty(gradOutput.gpu, [channels]);
  launch(
    gradOutput.gpu,
    { name: op, code: CONV2D_BACKWARD_BIAS_WGSL },
    {
      bindings: [gradOutput, gradBias],
      params: new Params().u32(batch, channels, height * width),
      workgroups: grid(channels, 64),
      flops: gradOutput.size,
      bytes: 4 * (gradOutput.size + channels),
    },
  );
  return gradBias;
}
