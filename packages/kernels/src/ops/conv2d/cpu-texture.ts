/**
 * Variant "cpu-texture" (lavapipe/llvmpipe): llvmpipe turns every buffer load whose address varies per
 * invocation into per-lane scalar loads with a bounds-check branch each, while a `textureLoad` of an
 * rgba32float texel is one branch-free gather of four floats (measured: ~1.7x fewer instructions per
 * convolution than the best buffer version). So operands are first packed into textures, four channels
 * per texel and zero padding included (no bounds checks in the inner loop), and each invocation keeps
 * an 8 output-channel x 8 pixel block in registers: per tap it loads 8 input texels and 8 weight
 * texels (vec4 loads of four channels each) for 256 multiply-adds. No workgroup memory, no im2col.
 * The packing textures come from the shared scratch texture pool (ops/common/texture-pool.ts).
 *
 * A packed tensor is a set of planes (n, group, channel quad), each a zero-padded H' x W' image of
 * texels, laid out side by side in rows of `planesPerRow` planes so large tensors fit the 2-D limit.
 */
import type { Gpu } from "../../runtime/device.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../../runtime/kernel.ts";
import { OpError, type Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { type ScratchTexture, texturePool } from "../common/texture-pool.ts";
import { type PlaneLayout, planeLayout } from "./cpu-layout.ts";
import { type Conv2dGeometry, GEOMETRY_FIELDS, geometryParams } from "./geometry.ts";

export const PLANE_ORIGIN_WGSL = `
fn planeOrigin(plane: u32, planesPerRow: u32, planeWidth: u32, planeHeight: u32) -> vec2<u32> {
  return vec2<u32>((plane % planesPerRow) * planeWidth, (plane / planesPerRow) * planeHeight);
}
fn nextPlane(origin: vec2<u32>, planesPerRow: u32, planeWidth: u32, planeHeight: u32) -> vec2<u32> {
  let wraps = origin.x + planeWidth >= planesPerRow * planeWidth;
  return select(vec2<u32>(origin.x + planeWidth, origin.y), vec2<u32>(0u, origin.y + planeHeight), wraps);
}`;

/**
 * NCHW buffer -> packed planes (n, group, quad): texel = channels 4*quad..4*quad+3 of the group. An
 * invocation owns one texel position (px, py) of one image's planes and walks that image's quads,
 * so the integer divisions (per-lane and slow on a CPU adapter) are paid once per position, not once
 * per texel; the image is the dispatch's z (in chunks of at most 65535 images).
 */
export const CONV2D_PACK_WGSL = `
@group(0) @binding(0) var<storage, read> source: array<f32>;
@group(0) @binding(1) var packedPlanes: texture_storage_2d<rgba32float, write>;
struct Params { N: u32, groups: u32, channelsPerGroup: u32, quads: u32, H: u32, W: u32,
  planeHeight: u32, planeWidth: u32, padTop: u32, padLeft: u32, planesPerRow: u32, imageOffset: u32 }
@group(0) @binding(2) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
${PLANE_ORIGIN_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= p.planeHeight * p.planeWidth) { return; }
  let image = gid.z + p.imageOffset; // n * groups + group
  let px = index % p.planeWidth;
  let py = index / p.planeWidth;
  let iy = i32(py) - i32(p.padTop);
  let ix = i32(px) - i32(p.padLeft);
  let inside = iy >= 0 && iy < i32(p.H) && ix >= 0 && ix < i32(p.W);
  let channelStride = p.H * p.W;
  var offset = image * p.channelsPerGroup * channelStride + u32(max(iy, 0)) * p.W + u32(max(ix, 0));
  var origin = planeOrigin(image * p.quads, p.planesPerRow, p.planeWidth, p.planeHeight);
  for (var quad = 0u; quad < p.quads; quad++) {
    var texel = vec4<f32>(0.0);
    if (inside) {
      for (var i = 0u; i < 4u; i++) {
        if (quad * 4u + i < p.channelsPerGroup) { texel[i] = source[offset + i * channelStride]; }
      }
    }
    textureStore(packedPlanes, origin + vec2<u32>(px, py), texel);
    offset += 4u * channelStride;
    origin = nextPlane(origin, p.planesPerRow, p.planeWidth, p.planeHeight);
  }
}`;

/** Largest image count of one packing dispatch (its z dimension). */
const PACK_IMAGES_PER_DISPATCH = 65535;

export interface PackedPlanes {
  scratch: ScratchTexture;
  view: GPUTextureView;
  layout: PlaneLayout;
}

export function packPlanes(
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
  const scratch = texturePool(gpu).acquire(layout.textureWidth, layout.textureHeight);
  const view = scratch.texture.createView();
  const planePixels = padding.planeHeight * padding.planeWidth;
  const images = batch * groups;
  const [x, y] = grid(planePixels, 64);
  for (let imageOffset = 0; imageOffset < images; imageOffset += PACK_IMAGES_PER_DISPATCH) {
    const count = Math.min(PACK_IMAGES_PER_DISPATCH, images - imageOffset);
    launch(
      gpu,
      { name: "conv2dPack", code: CONV2D_PACK_WGSL },
      {
        bindings: [source, view],
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
          imageOffset,
        ),
        workgroups: [x, y, count],
        flops: 0,
        bytes: (4 * source.size * count) / images + 16 * count * quads * planePixels,
      },
    );
  }
  return { scratch, view, layout };
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

/** Packs `w` into `target` (a texture from the scratch pool when none is given) for one layout. */
export function packWeights(
  gpu: Gpu,
  op: string,
  g: Conv2dGeometry,
  w: Tensor,
  quadOverOutputs: boolean,
  target?: ScratchTexture,
  targetView?: GPUTextureView,
): { scratch: ScratchTexture; view: GPUTextureView } {
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
  const scratch = target ?? texturePool(gpu).acquire(columns, rows);
  const view = targetView ?? scratch.texture.createView();
  launch(
    gpu,
    { name: "conv2dPack", code: CONV2D_PACK_WEIGHTS_WGSL },
    {
      bindings: [w, view],
      params: geometryParams(g).u32(quadOverOutputs ? 1 : 0, columns, columns * rows),
      workgroups: grid(columns * rows, 64),
      flops: 0,
      bytes: 4 * w.size + 16 * columns * rows,
    },
  );
  return { scratch, view };
}

/** Eight dot products of one weight texel with pixel texels 0-3 and 4-7 (helper of the CPU kernels). */
export const DOTS_WGSL = `
fn dots(weights: vec4<f32>, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(dot(weights, a), dot(weights, b), dot(weights, c), dot(weights, d));
}`;

/**
 * The forward's bindings, Params (work items of `pixelItems` pixel blocks x `channelBlocks` per image,
 * `total` in all) and helpers (each pixel's top-left tap, clamped weight rows, the store with bias),
 * shared by cpu-texture and cpu-subgroup.
 */
export const FORWARD_HEADER_WGSL = `
@group(0) @binding(0) var packedInput: texture_2d<f32>;
@group(0) @binding(1) var packedWeights: texture_2d<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
struct Params { ${GEOMETRY_FIELDS}, planeHeight: u32, planeWidth: u32, planesPerRow: u32,
  pixelItems: u32, channelBlocks: u32, total: u32, hasBias: u32 }
@group(0) @binding(4) var<uniform> p: Params;
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
}`;

/**
 * Forward, CPU adapters. Invocation = 8 output channels x 8 output pixels (flattened, so small or odd
 * images waste no lanes). Per (input-channel quad, ky, kx): 8 input texels + 8 weight texels, 256
 * multiply-adds in registers. `taps` are each pixel's top-left input position in the padded plane.
 */
/** The forward kernels' first tap of each of the 8 pixels from \`pixel0\` (t0-t7). */
export const FORWARD_PIXEL_TAPS_WGSL = `let t0 = tapOf(pixel0); let t1 = tapOf(pixel0 + 1u); let t2 = tapOf(pixel0 + 2u); let t3 = tapOf(pixel0 + 3u);
  let t4 = tapOf(pixel0 + 4u); let t5 = tapOf(pixel0 + 5u); let t6 = tapOf(pixel0 + 6u); let t7 = tapOf(pixel0 + 7u);`;

/**
 * The head of the forward kernels' loop over input-channel quads, up to the weight loads: each
 * quad's plane, the tap loops (the \`{{tapLoops}}\` placeholder, closed by the kernel), the 8 pixels'
 * input texels x0-x7 at the tap and the packed-weight column.
 */
export const FORWARD_QUAD_LOOP_WGSL = `let quads = (p.Cg + 3u) / 4u;
  // Plane origins advance by one plane per quad; stepping avoids a per-lane division in the loop.
  var origin = planeOrigin(image * quads, p.planesPerRow, p.planeWidth, p.planeHeight);
  for (var quad = 0u; quad < quads; quad++) {
    {{tapLoops}}
        let shift = origin + vec2<u32>(kx * p.dW, ky * p.dH);
        let x0 = textureLoad(packedInput, t0 + shift, 0); let x1 = textureLoad(packedInput, t1 + shift, 0);
        let x2 = textureLoad(packedInput, t2 + shift, 0); let x3 = textureLoad(packedInput, t3 + shift, 0);
        let x4 = textureLoad(packedInput, t4 + shift, 0); let x5 = textureLoad(packedInput, t5 + shift, 0);
        let x6 = textureLoad(packedInput, t6 + shift, 0); let x7 = textureLoad(packedInput, t7 + shift, 0);
        let column = (quad * p.kH + ky) * p.kW + kx;`;

const CONV2D_CPU_TEMPLATE = `
${FORWARD_HEADER_WGSL}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  let pixelBlock = index % p.pixelItems;
  let channelBlock = (index / p.pixelItems) % p.channelBlocks;
  let image = min(index / (p.pixelItems * p.channelBlocks), p.N * p.groups - 1u); // n * groups + group
  let group = image % p.groups;
  let pixel0 = pixelBlock * 8u;
  let o0 = channelBlock * 8u;
  ${FORWARD_PIXEL_TAPS_WGSL}
  let r0 = weightRow(group, o0); let r1 = weightRow(group, o0 + 1u); let r2 = weightRow(group, o0 + 2u);
  let r3 = weightRow(group, o0 + 3u); let r4 = weightRow(group, o0 + 4u); let r5 = weightRow(group, o0 + 5u);
  let r6 = weightRow(group, o0 + 6u); let r7 = weightRow(group, o0 + 7u);
  // low*: pixels 0-3, high*: pixels 4-7, one pair per output channel.
  var low0 = vec4<f32>(0.0); var low1 = vec4<f32>(0.0); var low2 = vec4<f32>(0.0); var low3 = vec4<f32>(0.0);
  var low4 = vec4<f32>(0.0); var low5 = vec4<f32>(0.0); var low6 = vec4<f32>(0.0); var low7 = vec4<f32>(0.0);
  var high0 = vec4<f32>(0.0); var high1 = vec4<f32>(0.0); var high2 = vec4<f32>(0.0); var high3 = vec4<f32>(0.0);
  var high4 = vec4<f32>(0.0); var high5 = vec4<f32>(0.0); var high6 = vec4<f32>(0.0); var high7 = vec4<f32>(0.0);
  ${FORWARD_QUAD_LOOP_WGSL}
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

/** Stride phases of the input gradient: pixels per phase, and the output offset a tap reaches. */
export const PHASE_WGSL = `
/** Rows/columns of the input that belong to phase \`phase\` along an axis of size \`size\`. */
fn phaseLength(size: u32, phase: u32, stride: u32) -> u32 {
  if (phase >= size) { return 0u; }
  return (size - phase + stride - 1u) / stride;
}
const SKIPPED = -2147483647;
/** Output offset reached by tap k in this phase, or SKIPPED when the stride skips it. */
fn tapOffset(phase: u32, pad: u32, k: u32, dilation: u32, stride: u32) -> i32 {
  let t = i32(phase + pad) - i32(k * dilation);
  let remainder = ((t % i32(stride)) + i32(stride)) % i32(stride);
  if (remainder != 0) { return SKIPPED; }
  return (t - remainder) / i32(stride);
}`;

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
  padTop: u32, padLeft: u32, pixelItems: u32, channelBlocks: u32, total: u32 }
@group(0) @binding(3) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
${PLANE_ORIGIN_WGSL}
${DOTS_WGSL}
${PHASE_WGSL}
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
  let pixelBlock = index % p.pixelItems;
  let channelBlock = (index / p.pixelItems) % p.channelBlocks;
  let phases = p.sH * p.sW;
  let phase = (index / (p.pixelItems * p.channelBlocks)) % phases;
  let image = min(index / (p.pixelItems * p.channelBlocks * phases), p.N * p.groups - 1u);
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
      if (offsetY == SKIPPED) { continue; }
      for (var kx = 0u; kx < p.kW; kx++) {
        let offsetX = tapOffset(phaseX, p.pW, kx, p.dW, p.sW);
        if (offsetX == SKIPPED) { continue; }
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

/** d.x * a + d.y * b + d.z * c + d.w * e: four pixels' contribution to a weight-gradient column. */
export const CONTRACT_WGSL = `
fn contract(d: vec4<f32>, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, e: vec4<f32>) -> vec4<f32> {
  return d.x * a + d.y * b + d.z * c + d.w * e;
}`;

/** Stores one weight-gradient column quad (4 input channels at one tap) of output channel o. */
export const STORE_COLUMN_WGSL = `
fn storeColumn(split: u32, group: u32, o: u32, column: u32, value: vec4<f32>) {
  let taps = p.kH * p.kW;
  let quad = column / taps;
  let tap = column % taps;
  if (o >= p.Og) { return; }
  let base = (split * p.O + group * p.Og + o) * p.Cg * taps + tap;
  for (var i = 0u; i < 4u; i++) {
    if (quad * 4u + i < p.Cg) { partial[base + (quad * 4u + i) * taps] = value[i]; }
  }
}`;

/**
 * The weight gradient's bindings, Params (one work item = `columnItems` x `channelBlocks` per split
 * and group; `total` items) and helpers, shared by cpu-texture and cpu-subgroup.
 */
export const WEIGHT_GRADIENT_HEADER_WGSL = `
@group(0) @binding(0) var packedGradOutput: texture_2d<f32>;
@group(0) @binding(1) var packedInput: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
struct Params { ${GEOMETRY_FIELDS}, gradPlaneHeight: u32, gradPlaneWidth: u32, gradPlanesPerRow: u32,
  inputPlaneHeight: u32, inputPlaneWidth: u32, inputPlanesPerRow: u32,
  columnItems: u32, channelBlocks: u32, splits: u32, rowsPerChunk: u32, total: u32 }
@group(0) @binding(3) var<uniform> p: Params;
${PLANE_ORIGIN_WGSL}
${CONTRACT_WGSL}
${STORE_COLUMN_WGSL}`;

/**
 * Weight gradient, CPU adapters. Invocation = 8 output channels x 2 column quads (a column quad is
 * four input channels at one tap), reducing over its chunk of output rows four pixels at a time:
 * 8 gradOutput texels (two quads of outputs x 4 pixels) and 8 input texels per step, each accumulator
 * update a 16-term contraction. gradOutput planes are padded to a multiple of 4 pixels wide with
 * zeros, so the tail of a row contributes nothing.
 */
export const CONV2D_BACKWARD_WEIGHT_CPU_WGSL = `
${WEIGHT_GRADIENT_HEADER_WGSL}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  let columnPair = index % p.columnItems;
  let channelBlock = (index / p.columnItems) % p.channelBlocks;
  let split = (index / (p.columnItems * p.channelBlocks)) % p.splits;
  let group = min(index / (p.columnItems * p.channelBlocks * p.splits), p.groups - 1u);
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
