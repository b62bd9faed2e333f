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
 * The input gradient and the weight gradient run on the same core (below).
 */
import { wgsl } from "../../runtime/kernel.ts";
import {
  FORWARD_HEADER_WGSL,
  FORWARD_PIXEL_TAPS_WGSL,
  FORWARD_QUAD_LOOP_WGSL,
  PHASE_WGSL,
  PLANE_ORIGIN_WGSL,
  WEIGHT_GRADIENT_HEADER_WGSL,
} from "./cpu-texture.ts";
import { GEOMETRY_FIELDS } from "./geometry.ts";

/** Lanes of one broadcast (llvmpipe's subgroups are 8 lanes) and the block each lane computes. */
export const CONV2D_SUBGROUP_BLOCK = { lanes: 8, channels: 16, pixels: 8, workgroupSize: 8 } as const;

const { lanes, channels } = CONV2D_SUBGROUP_BLOCK;
const channelIndices = Array.from({ length: channels }, (_, j) => j);
const ownIndices = Array.from({ length: channels / lanes }, (_, s) => s);

/**
 * Every subgroup kernel's entry: one workgroup of 8 lanes per work item, `flat` its index; a whole
 * workgroup past the last item returns together, so subgroups stay complete.
 */
const SUBGROUP_MAIN_WGSL = `@compute @workgroup_size(${CONV2D_SUBGROUP_BLOCK.workgroupSize})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32, @builtin(subgroup_invocation_id) subgroupLane: u32) {
  let flat = wid.x + wid.y * groups.x;
  if (flat >= p.total) { return; }`;

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
${FORWARD_HEADER_WGSL}
${SUBGROUP_MAIN_WGSL}
  let pixelGroup = flat % p.pixelItems;
  let channelBlock = (flat / p.pixelItems) % p.channelBlocks;
  let image = flat / (p.pixelItems * p.channelBlocks); // n * groups + group
  let group = image % p.groups;
  let pixel0 = (pixelGroup * ${CONV2D_SUBGROUP_BLOCK.workgroupSize}u + lane) * 8u;
  let o0 = channelBlock * ${channels}u;
  ${FORWARD_PIXEL_TAPS_WGSL}
  // The weight rows this lane loads for the whole subgroup.
  {{ownRows}}
  // low*: pixels 0-3, high*: pixels 4-7, one pair per output channel.
  {{declare}}
  ${FORWARD_QUAD_LOOP_WGSL}
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

const pixelIndices = Array.from({ length: CONV2D_SUBGROUP_BLOCK.pixels }, (_, p) => p);
const quadIndices = Array.from({ length: channels / 4 }, (_, k) => k);

/** The input gradient's block: 4 input-channel quads x 8 pixels per lane, 16 weight texels shared. */
const BACKWARD_INPUT_BLOCK = {
  // Texel j = 8s + lane of the 16 the block needs per (output quad, tap): input quad j / 4 of output
  // channel 4 * quad + j % 4, in the forward's layout (4 input channels per texel).
  ownColumns: ownIndices
    .map(
      (s) =>
        `let ownColumn${s} = min(c0 / 4u + ${2 * s}u + ownLane / 4u, (p.Cg + 3u) / 4u - 1u) * p.kH * p.kW;`,
    )
    .join("\n  "),
  loadOwn: ownIndices
    .map((s) => `let own${s} = textureLoad(packedWeights, vec2<u32>(ownColumn${s} + tap, ownRow), 0);`)
    .join("\n        "),
  declare: quadIndices
    .flatMap((k) => pixelIndices.map((q) => `var acc${k}_${q} = vec4<f32>(0.0);`))
    .join("\n  "),
  // m{k}: input quad k's 4 channels (a column per output channel of the quad); m * g sums over them.
  accumulate: quadIndices
    .map((k) =>
      [
        `let m${k} = mat4x4<f32>(${[0, 1, 2, 3]
          .map((i) => `subgroupBroadcast(own${Math.floor((4 * k + i) / lanes)}, ${(4 * k + i) % lanes}u)`)
          .join(", ")});`,
        ...pixelIndices.map((q) => `acc${k}_${q} += m${k} * g${q};`),
      ].join(" "),
    )
    .join("\n        "),
  store: quadIndices
    .flatMap((k) =>
      pixelIndices.map((q) => `storeQuad(imageBase, c0 + ${4 * k}u, position${q}, acc${k}_${q});`),
    )
    .join("\n  "),
};

/**
 * Input gradient (a transposed convolution) on the same core: cpu-texture's stride-phase ordering
 * (pixels grouped by (iy mod sH, ix mod sW), so taps the stride skips are skipped, not multiplied by
 * zero), with one image, one phase and 16 input channels per workgroup, so the skip is uniform. It
 * reads the forward's packed weights (4 input channels per texel), so a weight is packed once for
 * both passes: per (output quad, tap) the block needs 16 texels (4 input quads x 4 output channels),
 * 2 loaded per lane and broadcast; each lane keeps 4 input quads x 8 pixels and adds
 * `mat4x4(texels of output channels o..o+3) * gradient texel` (a sum over the 4 output channels).
 */
export const CONV2D_BACKWARD_INPUT_CPU_SUBGROUP_WGSL = wgsl(
  `
enable subgroups;
@group(0) @binding(0) var packedGradOutput: texture_2d<f32>;
@group(0) @binding(1) var packedWeights: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> gradInput: array<f32>;
struct Params { ${GEOMETRY_FIELDS}, planeHeight: u32, planeWidth: u32, planesPerRow: u32,
  padTop: u32, padLeft: u32, pixelItems: u32, channelBlocks: u32, total: u32 }
@group(0) @binding(3) var<uniform> p: Params;
${PLANE_ORIGIN_WGSL}
${PHASE_WGSL}
const NO_PIXEL = 0xffffffffu;
/** Offset of phase pixel q inside its input plane, or NO_PIXEL past the phase's last pixel. */
fn positionOf(q: u32, phaseY: u32, phaseX: u32, phaseWidth: u32, count: u32) -> u32 {
  if (q >= count) { return NO_PIXEL; }
  return (phaseY + (q / phaseWidth) * p.sH) * p.W + phaseX + (q % phaseWidth) * p.sW;
}
/** Stores input channels c..c+3 (those that exist) of one pixel. */
fn storeQuad(imageBase: u32, c: u32, position: u32, value: vec4<f32>) {
  if (position == NO_PIXEL) { return; }
  for (var i = 0u; i < 4u; i++) {
    if (c + i < p.Cg) { gradInput[imageBase + (c + i) * p.H * p.W + position] = value[i]; }
  }
}
${SUBGROUP_MAIN_WGSL}
  let pixelGroup = flat % p.pixelItems;
  let channelBlock = (flat / p.pixelItems) % p.channelBlocks;
  let phases = p.sH * p.sW;
  let phase = (flat / (p.pixelItems * p.channelBlocks)) % phases;
  let image = flat / (p.pixelItems * p.channelBlocks * phases);
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
  let ownLane = subgroupLane % ${lanes}u;
  // The weight texels this lane loads for the whole subgroup: input quads 2s + ownLane / 4 (columns).
  {{ownColumns}}
  {{declare}}
  let quads = (p.Og + 3u) / 4u;
  let firstPlane = planeOrigin(image * quads, p.planesPerRow, p.planeWidth, p.planeHeight);
  // Taps outside, quads inside: a tap's offsets (integer divisions, per lane on a CPU) once per tap.
  for (var ky = 0u; ky < p.kH; ky++) {
    let offsetY = tapOffset(phaseY, p.pH, ky, p.dH, p.sH);
    if (offsetY == SKIPPED) { continue; }
    for (var kx = 0u; kx < p.kW; kx++) {
      let offsetX = tapOffset(phaseX, p.pW, kx, p.dW, p.sW);
      if (offsetX == SKIPPED) { continue; }
      let tap = ky * p.kW + kx;
      var plane = firstPlane;
      for (var quad = 0u; quad < quads; quad++) {
        let shift = vec2<i32>(plane) + vec2<i32>(offsetX, offsetY);
        let g0 = textureLoad(packedGradOutput, t0 + shift, 0); let g1 = textureLoad(packedGradOutput, t1 + shift, 0);
        let g2 = textureLoad(packedGradOutput, t2 + shift, 0); let g3 = textureLoad(packedGradOutput, t3 + shift, 0);
        let g4 = textureLoad(packedGradOutput, t4 + shift, 0); let g5 = textureLoad(packedGradOutput, t5 + shift, 0);
        let g6 = textureLoad(packedGradOutput, t6 + shift, 0); let g7 = textureLoad(packedGradOutput, t7 + shift, 0);
        // Output channel 4 * quad + ownLane % 4 (clamped: past Og the gradient texel's component is 0).
        let ownRow = group * p.Og + min(quad * 4u + ownLane % 4u, p.Og - 1u);
        {{loadOwn}}
        {{accumulate}}
        plane = nextPlane(plane, p.planesPerRow, p.planeWidth, p.planeHeight);
      }
    }
  }
  let n = image / p.groups;
  let imageBase = (n * p.C + group * p.Cg) * p.H * p.W;
  let position0 = positionOf(pixel0, phaseY, phaseX, phaseWidth, count);
  let position1 = positionOf(pixel0 + 1u, phaseY, phaseX, phaseWidth, count);
  let position2 = positionOf(pixel0 + 2u, phaseY, phaseX, phaseWidth, count);
  let position3 = positionOf(pixel0 + 3u, phaseY, phaseX, phaseWidth, count);
  let position4 = positionOf(pixel0 + 4u, phaseY, phaseX, phaseWidth, count);
  let position5 = positionOf(pixel0 + 5u, phaseY, phaseX, phaseWidth, count);
  let position6 = positionOf(pixel0 + 6u, phaseY, phaseX, phaseWidth, count);
  let position7 = positionOf(pixel0 + 7u, phaseY, phaseX, phaseWidth, count);
  {{store}}
}`,
  BACKWARD_INPUT_BLOCK,
);

/** Output channels (4 quads) and column quads (2 per lane, 8 lanes) of one weight-gradient workgroup. */
export const CONV2D_SUBGROUP_WEIGHT_BLOCK = { channels: 16, columnsPerLane: 2 } as const;

const outputIndices = Array.from({ length: CONV2D_SUBGROUP_WEIGHT_BLOCK.channels }, (_, o) => o);

/** The weight gradient's block: 16 output channels x 2 column quads per lane, 16 gradient texels shared. */
const BACKWARD_WEIGHT_BLOCK = {
  // Texel j = 8s + lane of the 16 the block needs per step: output quad j / 4 at pixel j % 4.
  ownGrad: ownIndices
    .map(
      (s) =>
        `gradPlane${s} = planeOrigin(image * outputQuads + outputQuad${2 * s}or${2 * s + 1}, ` +
        "p.gradPlanesPerRow, p.gradPlaneWidth, p.gradPlaneHeight);",
    )
    .join("\n    "),
  loadOwn: ownIndices
    .map((s) => `let own${s} = textureLoad(packedGradOutput, ownGrad${s} + vec2<u32>(ox, 0u), 0);`)
    .join("\n      "),
  // d{quad}_{pixel}: the 4 output channels of a quad at one pixel; e{o}: output channel o at 4 pixels.
  broadcast: [0, 1, 2, 3]
    .map((quad) =>
      [0, 1, 2, 3]
        .map((pixel) => {
          const j = 4 * quad + pixel;
          return `let d${quad}_${pixel} = subgroupBroadcast(own${Math.floor(j / lanes)}, ${j % lanes}u);`;
        })
        .join(" "),
    )
    .join("\n      "),
  accumulate: outputIndices
    .map((o) => {
      const quad = Math.floor(o / 4);
      const component = "xyzw"[o % 4];
      const e = [0, 1, 2, 3].map((pixel) => `d${quad}_${pixel}.${component}`).join(", ");
      return (
        `let e${o} = vec4<f32>(${e}); ` +
        `a${o} += contract(e${o}, xa0, xa1, xa2, xa3); b${o} += contract(e${o}, xb0, xb1, xb2, xb3);`
      );
    })
    .join("\n      "),
  declare: outputIndices.map((o) => `var a${o} = vec4<f32>(0.0); var b${o} = vec4<f32>(0.0);`).join("\n  "),
  store: outputIndices
    .map(
      (o) =>
        `if (hasColumnA) { storeColumn(split, group, o0 + ${o}u, columnA, a${o}); } ` +
        `if (hasColumnB) { storeColumn(split, group, o0 + ${o}u, columnB, b${o}); }`,
    )
    .join("\n  "),
};

/**
 * Weight gradient on the same core: dw [O, Cg, kH, kW] is a product of gradOutput (rows: output
 * channels) and the input windows (columns: input-channel quad x tap), reduced over a chunk of output
 * rows 4 pixels at a time. A workgroup of 8 lanes owns one group, one chunk, 16 output channels and 16
 * column quads; each lane keeps 16 channels x its 2 column quads in registers (cpu-texture's
 * invocation: 8 x 2). Per step a lane loads its 8 input texels (2 columns x 4 pixels) and 2 of the 16
 * gradient texels (4 output quads x 4 pixels) the whole block shares, which `subgroupBroadcast`
 * hands round: 10 texel loads per 512 multiply-adds (cpu-texture: 16 per 256). Same packed planes as
 * cpu-texture's weight gradient (gradOutput planes zero-padded to a multiple of 4 pixels).
 */
export const CONV2D_BACKWARD_WEIGHT_CPU_SUBGROUP_WGSL = wgsl(
  `
enable subgroups;
${WEIGHT_GRADIENT_HEADER_WGSL}
${SUBGROUP_MAIN_WGSL}
  let columnGroup = flat % p.columnItems;
  let channelBlock = (flat / p.columnItems) % p.channelBlocks;
  let split = (flat / (p.columnItems * p.channelBlocks)) % p.splits;
  let group = flat / (p.columnItems * p.channelBlocks * p.splits);
  let taps = p.kH * p.kW;
  let inputQuads = (p.Cg + 3u) / 4u;
  let outputQuads = (p.Og + 3u) / 4u;
  let columns = inputQuads * taps;
  let columnPair = columnGroup * ${CONV2D_SUBGROUP_BLOCK.workgroupSize}u + lane;
  let columnA = min(columnPair * 2u, columns - 1u);
  let columnB = min(columnPair * 2u + 1u, columns - 1u);
  let offsetA = vec2<u32>((columnA % taps % p.kW) * p.dW, (columnA % taps / p.kW) * p.dH);
  let offsetB = vec2<u32>((columnB % taps % p.kW) * p.dW, (columnB % taps / p.kW) * p.dH);
  let quadA = columnA / taps;
  let quadB = columnB / taps;
  // The gradient texels this lane loads for the whole subgroup: output quads (2s + lane / 4) at pixel lane % 4.
  let ownLane = subgroupLane % ${lanes}u;
  let outputQuad0or1 = min(channelBlock * 4u + ownLane / 4u, outputQuads - 1u);
  let outputQuad2or3 = min(channelBlock * 4u + 2u + ownLane / 4u, outputQuads - 1u);
  let ownPixel = ownLane % 4u;
  {{declare}}
  let rowBegin = split * p.rowsPerChunk;
  let rowEnd = min(rowBegin + p.rowsPerChunk, p.N * p.OH);
  // The image's plane origins, recomputed (integer divisions) only when the row walks into the next image.
  var oy = rowBegin % p.OH;
  var n = rowBegin / p.OH;
  var gradPlane0 = vec2<u32>(0u); var gradPlane1 = vec2<u32>(0u);
  var inputPlaneA = vec2<u32>(0u); var inputPlaneB = vec2<u32>(0u);
  var originsOf = p.N; // no image yet
  for (var row = rowBegin; row < rowEnd; row++) {
    if (oy == p.OH) { oy = 0u; n++; }
    if (originsOf != n) {
      let image = n * p.groups + group;
      {{ownGrad}}
      inputPlaneA = planeOrigin(image * inputQuads + quadA, p.inputPlanesPerRow, p.inputPlaneWidth, p.inputPlaneHeight) + offsetA;
      inputPlaneB = planeOrigin(image * inputQuads + quadB, p.inputPlanesPerRow, p.inputPlaneWidth, p.inputPlaneHeight) + offsetB;
      originsOf = n;
    }
    let ownGrad0 = gradPlane0 + vec2<u32>(ownPixel, oy);
    let ownGrad1 = gradPlane1 + vec2<u32>(ownPixel, oy);
    let inputA = inputPlaneA + vec2<u32>(0u, oy * p.sH);
    let inputB = inputPlaneB + vec2<u32>(0u, oy * p.sH);
    for (var ox = 0u; ox < p.gradPlaneWidth; ox += 4u) {
      {{loadOwn}}
      let xa0 = textureLoad(packedInput, inputA + vec2<u32>(ox * p.sW, 0u), 0);
      let xa1 = textureLoad(packedInput, inputA + vec2<u32>((ox + 1u) * p.sW, 0u), 0);
      let xa2 = textureLoad(packedInput, inputA + vec2<u32>((ox + 2u) * p.sW, 0u), 0);
      let xa3 = textureLoad(packedInput, inputA + vec2<u32>((ox + 3u) * p.sW, 0u), 0);
      let xb0 = textureLoad(packedInput, inputB + vec2<u32>(ox * p.sW, 0u), 0);
      let xb1 = textureLoad(packedInput, inputB + vec2<u32>((ox + 1u) * p.sW, 0u), 0);
      let xb2 = textureLoad(packedInput, inputB + vec2<u32>((ox + 2u) * p.sW, 0u), 0);
      let xb3 = textureLoad(packedInput, inputB + vec2<u32>((ox + 3u) * p.sW, 0u), 0);
      {{broadcast}}
      {{accumulate}}
    }
    oy++;
  }
  let o0 = channelBlock * ${CONV2D_SUBGROUP_WEIGHT_BLOCK.channels}u;
  let hasColumnA = columnPair * 2u < columns;
  let hasColumnB = columnPair * 2u + 1u < columns;
  {{store}}
}`,
  BACKWARD_WEIGHT_BLOCK,
);
