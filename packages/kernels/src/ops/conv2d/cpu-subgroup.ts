/**
 * Variant "cpu-subgroup" (lavapipe/llvmpipe with subgroups of >= 8 lanes): the forward pass on the
 * core of matmul's cpu-subgroup variant (ops/matmul/cpu-subgroup.ts). Same packed textures as
 * cpu-texture (input planes with their zero padding, weights with 4 input channels per texel), but a
 * workgroup owns one image, one block of 16 output channels and 8 x 8 consecutive output pixels:
 * each lane keeps 16 channels x 8 pixels in registers, loads its 8 input texels per (channel quad,
 * tap) itself, and loads only 2 weight texels, of channels `o0 + 8s + lane`, which
 * `subgroupBroadcast` hands to the other lanes: 10 texel loads per 512 multiply-adds (cpu-texture:
 * 16 per 256). Everything broadcast is uniform per workgroup, so any subgroup size >= 8 is correct.
 *
 * The input gradient runs on the same core (below); the weight gradient runs cpu-texture's kernel
 * (shown as cpu-texture in the profiler).
 */
import { wgsl } from "../../runtime/kernel.ts";
import { DOTS_WGSL, PLANE_ORIGIN_WGSL } from "./cpu-texture.ts";
import { GEOMETRY_FIELDS } from "./geometry.ts";

/** Lanes of one broadcast (llvmpipe's subgroups are 8 lanes) and the block each lane computes. */
export const CONV2D_SUBGROUP_BLOCK = { lanes: 8, channels: 16, pixels: 8, workgroupSize: 8 } as const;

const { lanes, channels } = CONV2D_SUBGROUP_BLOCK;
const channelIndices = Array.from({ length: channels }, (_, j) => j);
const ownIndices = Array.from({ length: channels / lanes }, (_, s) => s);

/** The block's unrolled statements: one line per output channel or per weight texel a lane loads. */
const BLOCK = {
  ownRows: ownIndices
    .map((s) => `let ownRow${s} = weightRow(group, o0 + ${s * lanes}u + subgroupLane % ${lanes}u);`)
    .join("\n  "),
  declare: channelIndices
    .map((j) => `var low${j} = vec4<f32>(0.0); var high${j} = vec4<f32>(0.0);`)
    .join("\n  "),
  loadOwn: ownIndices
    .map((s) => `let own${s} = textureLoad(packedWeights, vec2<u32>(column, ownRow${s}), 0);`)
    .join("\n        "),
  accumulate: channelIndices
    .map(
      (j) =>
        `let w${j} = subgroupBroadcast(own${Math.floor(j / lanes)}, ${j % lanes}u); ` +
        `low${j} += dots(w${j}, x0, x1, x2, x3); high${j} += dots(w${j}, x4, x5, x6, x7);`,
    )
    .join("\n        "),
  store: channelIndices.map((j) => `storeRow(n, group, o0 + ${j}u, pixel0, low${j}, high${j});`).join("\n  "),
};

const CONV2D_CPU_SUBGROUP_TEMPLATE = `
enable subgroups;
@group(0) @binding(0) var packedInput: texture_2d<f32>;
@group(0) @binding(1) var packedWeights: texture_2d<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
struct Params { ${GEOMETRY_FIELDS}, planeHeight: u32, planeWidth: u32, planesPerRow: u32,
  pixelGroups: u32, channelBlocks: u32, totalGroups: u32, hasBias: u32 }
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
}
@compute @workgroup_size(${CONV2D_SUBGROUP_BLOCK.workgroupSize})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32, @builtin(subgroup_invocation_id) subgroupLane: u32) {
  let flat = wid.x + wid.y * groups.x;
  if (flat >= p.totalGroups) { return; } // the whole workgroup: subgroups stay complete
  let pixelGroup = flat % p.pixelGroups;
  let channelBlock = (flat / p.pixelGroups) % p.channelBlocks;
  let image = flat / (p.pixelGroups * p.channelBlocks); // n * groups + group
  let group = image % p.groups;
  let pixel0 = (pixelGroup * ${CONV2D_SUBGROUP_BLOCK.workgroupSize}u + lane) * 8u;
  let o0 = channelBlock * ${channels}u;
  let t0 = tapOf(pixel0); let t1 = tapOf(pixel0 + 1u); let t2 = tapOf(pixel0 + 2u); let t3 = tapOf(pixel0 + 3u);
  let t4 = tapOf(pixel0 + 4u); let t5 = tapOf(pixel0 + 5u); let t6 = tapOf(pixel0 + 6u); let t7 = tapOf(pixel0 + 7u);
  // The weight rows this lane loads for the whole subgroup.
  {{ownRows}}
  // low*: pixels 0-3, high*: pixels 4-7, one pair per output channel.
  {{declare}}
  let quads = (p.Cg + 3u) / 4u;
  var origin = planeOrigin(image * quads, p.planesPerRow, p.planeWidth, p.planeHeight);
  for (var quad = 0u; quad < quads; quad++) {
    {{tapLoops}}
        let shift = origin + vec2<u32>(kx * p.dW, ky * p.dH);
        let x0 = textureLoad(packedInput, t0 + shift, 0); let x1 = textureLoad(packedInput, t1 + shift, 0);
        let x2 = textureLoad(packedInput, t2 + shift, 0); let x3 = textureLoad(packedInput, t3 + shift, 0);
        let x4 = textureLoad(packedInput, t4 + shift, 0); let x5 = textureLoad(packedInput, t5 + shift, 0);
        let x6 = textureLoad(packedInput, t6 + shift, 0); let x7 = textureLoad(packedInput, t7 + shift, 0);
        let column = (quad * p.kH + ky) * p.kW + kx;
        {{loadOwn}}
        {{accumulate}}
      }
    }
    origin = nextPlane(origin, p.planesPerRow, p.planeWidth, p.planeHeight);
  }
  let n = image / p.groups;
  {{store}}
}`;

/** The forward kernel, and its 1x1 fast path (no tap loops). */
export const CONV2D_CPU_SUBGROUP_WGSL = wgsl(CONV2D_CPU_SUBGROUP_TEMPLATE, {
  ...BLOCK,
  tapLoops: "for (var ky = 0u; ky < p.kH; ky++) { for (var kx = 0u; kx < p.kW; kx++) {",
});
export const CONV2D_CPU_SUBGROUP_1X1_WGSL = wgsl(CONV2D_CPU_SUBGROUP_TEMPLATE, {
  ...BLOCK,
  tapLoops: "{ let ky = 0u; { let kx = 0u;",
});

/** The input gradient's block: one line per input channel or per weight texel a lane loads. */
const BACKWARD_INPUT_BLOCK = {
  ownRows: ownIndices
    .map((s) => `let ownRow${s} = rowBase + min(c0 + ${s * lanes}u + subgroupLane % ${lanes}u, p.Cg - 1u);`)
    .join("\n  "),
  declare: BLOCK.declare,
  loadOwn: BLOCK.loadOwn,
  accumulate: channelIndices
    .map(
      (j) =>
        `let w${j} = subgroupBroadcast(own${Math.floor(j / lanes)}, ${j % lanes}u); ` +
        `low${j} += dots(w${j}, g0, g1, g2, g3); high${j} += dots(w${j}, g4, g5, g6, g7);`,
    )
    .join("\n        "),
  store: channelIndices
    .map(
      (j) =>
        `if (c0 + ${j}u < p.Cg) { storeRow(n, rowBase + c0 + ${j}u, phaseY, phaseX, phaseWidth, count, pixel0, low${j}, high${j}); }`,
    )
    .join("\n  "),
};

/**
 * Input gradient (a transposed convolution) on the same core: cpu-texture's stride-phase ordering
 * (pixels grouped by (iy mod sH, ix mod sW), so taps the stride skips are skipped, not multiplied by
 * zero), with one image, one phase and 16 input channels per workgroup, so the skip is uniform and
 * the weight texels (4 output channels each) are loaded 2 per lane and broadcast.
 */
export const CONV2D_BACKWARD_INPUT_CPU_SUBGROUP_WGSL = wgsl(
  `
enable subgroups;
@group(0) @binding(0) var packedGradOutput: texture_2d<f32>;
@group(0) @binding(1) var packedWeights: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> gradInput: array<f32>;
struct Params { ${GEOMETRY_FIELDS}, planeHeight: u32, planeWidth: u32, planesPerRow: u32,
  padTop: u32, padLeft: u32, pixelGroups: u32, channelBlocks: u32, totalGroups: u32 }
@group(0) @binding(3) var<uniform> p: Params;
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
@compute @workgroup_size(${CONV2D_SUBGROUP_BLOCK.workgroupSize})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32, @builtin(subgroup_invocation_id) subgroupLane: u32) {
  let flat = wid.x + wid.y * groups.x;
  if (flat >= p.totalGroups) { return; } // the whole workgroup: subgroups stay complete
  let pixelGroup = flat % p.pixelGroups;
  let channelBlock = (flat / p.pixelGroups) % p.channelBlocks;
  let phases = p.sH * p.sW;
  let phase = (flat / (p.pixelGroups * p.channelBlocks)) % phases;
  let image = flat / (p.pixelGroups * p.channelBlocks * phases);
  let group = image % p.groups;
  let phaseY = phase / p.sW;
  let phaseX = phase % p.sW;
  let phaseWidth = max(phaseLength(p.W, phaseX, p.sW), 1u);
  let count = phaseLength(p.H, phaseY, p.sH) * phaseLength(p.W, phaseX, p.sW);
  let pixel0 = (pixelGroup * ${CONV2D_SUBGROUP_BLOCK.workgroupSize}u + lane) * 8u;
  // Each pixel's position (jx, jy) in the phase grid, shifted into the padded gradOutput plane.
  var taps: array<vec2<i32>, 8>;
  for (var j = 0u; j < 8u; j++) {
    let q = min(pixel0 + j, max(count, 1u) - 1u);
    taps[j] = vec2<i32>(i32(q % phaseWidth + p.padLeft), i32(q / phaseWidth + p.padTop));
  }
  let t0 = taps[0]; let t1 = taps[1]; let t2 = taps[2]; let t3 = taps[3];
  let t4 = taps[4]; let t5 = taps[5]; let t6 = taps[6]; let t7 = taps[7];
  let c0 = channelBlock * ${channels}u;
  let rowBase = group * p.Cg;
  // The weight rows this lane loads for the whole subgroup.
  {{ownRows}}
  {{declare}}
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
        {{loadOwn}}
        {{accumulate}}
      }
    }
    plane = nextPlane(plane, p.planesPerRow, p.planeWidth, p.planeHeight);
  }
  let n = image / p.groups;
  {{store}}
}`,
  BACKWARD_INPUT_BLOCK,
);
