/**
 * Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3", SC 2011; the generator of Random123, cuRAND and PyTorch's CUDA backend).
 *
 * Stream layout: element `e` of the infinite stream for `seed` is word `e % 4` of
 * philox(counter = [e / 4 as 64 bits, lo word first, 0, 0], key = [seed lo, seed hi]). A draw of n
 * values at `offset` takes elements offset .. offset + n - 1, so results depend only on
 * (seed, offset, index), never on how the dispatch is laid out: two draws of n at 0 and m at n equal
 * one draw of n + m at 0. Each GPU invocation computes one Philox block (4 words) and writes the
 * elements of it that fall inside the draw.
 *
 * Uniforms are (word >> 8) * 2^-24 in [0, 1): exact in f32, so GPU and CPU agree bit for bit.
 * Normals use Box-Muller on the word pairs (0, 1) and (2, 3) of a block: z0 = r cos(2 pi u1),
 * z1 = r sin(2 pi u1), r = sqrt(-2 ln(1 - u0)); the pair elements 2, 3 likewise.
 */

import type { Gpu } from "../runtime/device.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { OpError, type Shape, sizeOf, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

const PHILOX_M0 = 0xd2511f53;
const PHILOX_M1 = 0xcd9e8d57;
const PHILOX_W0 = 0x9e3779b9;
const PHILOX_W1 = 0xbb67ae85;
const TWO_POW_32 = 2 ** 32;
const UNIFORM_SCALE = 2 ** -24;

/** High and low 32 bits of a 32x32-bit product, from 16-bit halves exactly as the WGSL does it. */
export function mulhilo32(a: number, b: number): [hi: number, lo: number] {
  const aLo = a & 0xffff;
  const aHi = a >>> 16;
  const bLo = b & 0xffff;
  const bHi = b >>> 16;
  const lowLow = aLo * bLo;
  const lowHigh = aLo * bHi;
  const highLow = aHi * bLo;
  const highHigh = aHi * bHi;
  const cross = (lowLow >>> 16) + (lowHigh & 0xffff) + (highLow & 0xffff);
  const hi = (highHigh + (lowHigh >>> 16) + (highLow >>> 16) + (cross >>> 16)) >>> 0;
  return [hi, Math.imul(a, b) >>> 0];
}

/** Philox4x32 with `rounds` rounds (10 is the standard, and what the GPU kernels use). */
export function philox4x32(
  counter: readonly [number, number, number, number],
  key: readonly [number, number],
  rounds = 10,
): [number, number, number, number] {
  let [c0, c1, c2, c3] = counter.map((word) => word >>> 0);
  let k0 = key[0] >>> 0;
  let k1 = key[1] >>> 0;
  for (let round = 0; round < rounds; round++) {
    if (round > 0) {
      k0 = (k0 + PHILOX_W0) >>> 0;
      k1 = (k1 + PHILOX_W1) >>> 0;
    }
    const [hi0, lo0] = mulhilo32(PHILOX_M0, c0);
    const [hi1, lo1] = mulhilo32(PHILOX_M1, c2);
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  return [c0, c1, c2, c3];
}

function checkSeed(op: string, seed: number, shape: Shape): void {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new OpError(op, `seed must be an integer in [0, 2^53), got ${seed}`, { shape });
  }
}

function checkOffset(op: string, offset: number, size: number, shape: Shape): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + size)) {
    throw new OpError(op, `offset must be an integer with offset + size < 2^53, got ${offset}`, { shape });
  }
}

/** The Philox key of a seed: its low and high 32-bit words. */
export function philoxKey(seed: number): [number, number] {
  return [seed % TWO_POW_32, Math.floor(seed / TWO_POW_32)];
}

/** The four 32-bit words of stream block `block` (element offset block * 4). */
export function philoxBlock(seed: number, block: number): [number, number, number, number] {
  return philox4x32([block % TWO_POW_32, Math.floor(block / TWO_POW_32), 0, 0], philoxKey(seed));
}

/** A Philox word as a uniform in [0, 1): its top 24 bits times 2^-24, exact in float32. */
export function uniformFromBits(word: number): number {
  return (word >>> 8) * UNIFORM_SCALE;
}

/** Visits stream elements offset .. offset + count - 1, one Philox block at a time. */
function forEachBlock(
  seed: number,
  offset: number,
  count: number,
  visit: (words: [number, number, number, number], firstElement: number) => void,
): void {
  const firstBlock = Math.floor(offset / 4);
  const lastBlock = Math.floor((offset + count - 1) / 4);
  for (let block = firstBlock; block <= lastBlock; block++) visit(philoxBlock(seed, block), block * 4);
}

/** CPU references of the GPU draws (float64; uniforms are exactly the float32 values the GPU writes). */
export const randomReference = {
  uniform(count: number, seed: number, offset = 0): Float64Array {
    const values = new Float64Array(count);
    forEachBlock(seed, offset, count, (words, firstElement) => {
      for (let lane = 0; lane < 4; lane++) {
        const index = firstElement + lane - offset;
        if (index >= 0 && index < count) values[index] = uniformFromBits(words[lane]);
      }
    });
    return values;
  },
  normal(count: number, seed: number, offset = 0, mean = 0, std = 1): Float64Array {
    const values = new Float64Array(count);
    forEachBlock(seed, offset, count, (words, firstElement) => {
      const normals = boxMuller(words);
      for (let lane = 0; lane < 4; lane++) {
        const index = firstElement + lane - offset;
        if (index >= 0 && index < count) values[index] = mean + std * normals[lane];
      }
    });
    return values;
  },
};

/** Four standard normals from one Philox block, in float64. */
function boxMuller(words: [number, number, number, number]): [number, number, number, number] {
  const normals: [number, number, number, number] = [0, 0, 0, 0];
  for (let pair = 0; pair < 2; pair++) {
    const radius = Math.sqrt(-2 * Math.log(1 - uniformFromBits(words[2 * pair])));
    const angle = 2 * Math.PI * uniformFromBits(words[2 * pair + 1]);
    normals[2 * pair] = radius * Math.cos(angle);
    normals[2 * pair + 1] = radius * Math.sin(angle);
  }
  return normals;
}

/**
 * Philox in WGSL. WGSL has no 64-bit integers, so mulhilo builds the high word of the 32x32 product
 * from 16-bit halves (every partial product fits in 32 bits).
 */
export const PHILOX_WGSL = `
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
  let aLo = a & 0xffffu;
  let aHi = a >> 16u;
  let bLo = b & 0xffffu;
  let bHi = b >> 16u;
  let lowLow = aLo * bLo;
  let lowHigh = aLo * bHi;
  let highLow = aHi * bLo;
  let highHigh = aHi * bHi;
  let cross = (lowLow >> 16u) + (lowHigh & 0xffffu) + (highLow & 0xffffu);
  let hi = highHigh + (lowHigh >> 16u) + (highLow >> 16u) + (cross >> 16u);
  return vec2<u32>(hi, a * b);
}
fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = counter;
  var k = key;
  for (var roundIndex = 0u; roundIndex < 10u; roundIndex++) {
    if (roundIndex > 0u) { k = k + vec2<u32>(${PHILOX_W0}u, ${PHILOX_W1}u); }
    let p0 = mulhilo(${PHILOX_M0}u, c.x);
    let p1 = mulhilo(${PHILOX_M1}u, c.z);
    c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
  }
  return c;
}
fn uniformFromBits(word: u32) -> f32 { return f32(word >> 8u) * ${UNIFORM_SCALE}; }`;

/**
 * Box-Muller in WGSL with our own log and sin/cos: WGSL only promises sin/cos to 2^-11 absolute and
 * log to 2^-21 absolute near 1 (too coarse for small radii), so both are computed from polynomials
 * that keep f32 accuracy: log via atanh series on the mantissa, sin/cos after exact quarter-turn
 * reduction (u is a multiple of 2^-24, so u - quarter/4 is exact).
 */
const BOX_MULLER_WGSL = `
fn logOfUnitInterval(x: f32) -> f32 {
  let bits = bitcast<u32>(x);
  var exponent = f32(i32(bits >> 23u) - 127);
  var mantissa = bitcast<f32>((bits & 0x7fffffu) | 0x3f800000u);
  if (mantissa > 1.41421356) { mantissa = mantissa * 0.5; exponent = exponent + 1.0; }
  let s = (mantissa - 1.0) / (mantissa + 1.0);
  let s2 = s * s;
  let series = 1.0 + s2 * (0.33333333 + s2 * (0.2 + s2 * (0.14285714 + s2 * (0.11111111 + s2 * 0.09090909))));
  return exponent * 0.69314718 + 2.0 * s * series;
}
fn sinCosTurns(u: f32) -> vec2<f32> {
  let quarter = round(u * 4.0);
  let x = (u - quarter * 0.25) * 6.28318531;
  let x2 = x * x;
  let sine = x * (1.0 - x2 * (0.16666667 - x2 * (0.0083333333 - x2 * (0.00019841270 - x2 * 0.0000027557319))));
  let cosine = 1.0 - x2 * (0.5 - x2 * (0.041666667 - x2 * (0.0013888889 - x2 * (0.000024801587 - x2 * 0.00000027557319))));
  switch (u32(quarter) & 3u) {
    case 0u: { return vec2<f32>(sine, cosine); }
    case 1u: { return vec2<f32>(cosine, -sine); }
    case 2u: { return vec2<f32>(-sine, -cosine); }
    default: { return vec2<f32>(-cosine, sine); }
  }
}
fn boxMuller(words: vec4<u32>) -> vec4<f32> {
  let radiusA = sqrt(-2.0 * logOfUnitInterval(1.0 - uniformFromBits(words.x)));
  let turnA = sinCosTurns(uniformFromBits(words.y));
  let radiusB = sqrt(-2.0 * logOfUnitInterval(1.0 - uniformFromBits(words.z)));
  let turnB = sinCosTurns(uniformFromBits(words.w));
  return vec4<f32>(radiusA * turnA.y, radiusA * turnA.x, radiusB * turnB.y, radiusB * turnB.x);
}`;

const DRAW_TEMPLATE = `
@group(0) @binding(0) var<storage, read_write> output: array<f32>;
struct Params { size: u32, blocks: u32, firstBlockLo: u32, firstBlockHi: u32, firstLane: u32, keyLo: u32, keyHi: u32, mean: f32, deviation: f32 }
@group(0) @binding(1) var<uniform> params: Params;
${PHILOX_WGSL}
{{helpers}}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let block = linearIndex(gid, groups, 256u);
  if (block >= params.blocks) { return; }
  let counterLo = params.firstBlockLo + block;
  let carry = select(0u, 1u, counterLo < block);
  let words = philox4x32_10(vec4<u32>(counterLo, params.firstBlockHi + carry, 0u, 0u), vec2<u32>(params.keyLo, params.keyHi));
  let values = {{transform}};
  for (var lane = 0u; lane < 4u; lane++) {
    // Block-local element (block * 4 + lane) is draw element (block * 4 + lane - firstLane).
    let position = block * 4u + lane;
    if (position >= params.firstLane && position - params.firstLane < params.size) {
      output[position - params.firstLane] = values[lane];
    }
  }
}`;

export const RANDOM_UNIFORM_WGSL = wgsl(DRAW_TEMPLATE, {
  helpers: "",
  transform:
    "vec4<f32>(uniformFromBits(words.x), uniformFromBits(words.y), uniformFromBits(words.z), uniformFromBits(words.w))",
});
export const RANDOM_NORMAL_WGSL = wgsl(DRAW_TEMPLATE, {
  helpers: BOX_MULLER_WGSL,
  transform: "vec4<f32>(params.mean) + params.deviation * boxMuller(words)",
});

/** Philox rounds are ~10 multiply-hi/lo pairs; counted as integer "FLOPs" for the profiler. */
export function randomCost(kind: "uniform" | "normal", size: number) {
  const blocks = Math.ceil(size / 4) + 1;
  return { flops: blocks * (kind === "uniform" ? 130 : 200), bytes: 4 * size };
}

function draw(
  gpu: Gpu,
  kind: "uniform" | "normal",
  shape: Shape,
  seed: number,
  offset: number,
  mean: number,
  std: number,
): Tensor {
  const op = kind === "uniform" ? "randomUniform" : "randomNormal";
  checkSeed(op, seed, shape);
  const size = sizeOf(shape);
  checkOffset(op, offset, size, shape);
  if (!Number.isFinite(mean) || !Number.isFinite(std) || std < 0) {
    throw new OpError(op, `mean must be finite and std finite and >= 0, got mean ${mean}, std ${std}`, {
      shape,
    });
  }
  const output = Tensor.empty(gpu, shape);
  const firstBlock = Math.floor(offset / 4);
  const firstLane = offset % 4;
  const blocks = Math.ceil((firstLane + size) / 4);
  const [keyLo, keyHi] = philoxKey(seed);
  launch(
    gpu,
    { name: op, code: kind === "uniform" ? RANDOM_UNIFORM_WGSL : RANDOM_NORMAL_WGSL },
    {
      bindings: [output],
      params: new Params()
        .u32(
          size,
          blocks,
          firstBlock % TWO_POW_32,
          Math.floor(firstBlock / TWO_POW_32),
          firstLane,
          keyLo,
          keyHi,
        )
        .f32(mean, std),
      workgroups: grid(blocks, 256),
      ...randomCost(kind, size),
    },
  );
  return output;
}

/** Uniform values in [0, 1) (multiples of 2^-24) from stream elements offset .. offset + size - 1. */
export function randomUniform(gpu: Gpu, shape: Shape, seed: number, offset = 0): Tensor {
  return draw(gpu, "uniform", shape, seed, offset, 0, 1);
}

/** Normal values mean + std * z, z standard normal by Box-Muller, from the same stream layout. */
export function randomNormal(gpu: Gpu, shape: Shape, seed: number, offset = 0, mean = 0, std = 1): Tensor {
  return draw(gpu, "normal", shape, seed, offset, mean, std);
}

/**
 * A seed and a position in its stream; each draw takes the next elements, so successive draws differ
 * and a run is reproducible from (seed, offset), which is all a checkpoint needs to store. The offset
 * advances by whole blocks (multiples of 4, as PyTorch's Philox offsets do) so no block's words feed
 * two draws (a uniform draw must not reuse the words behind a previous normal).
 */
export class Generator {
  private offset_: number;

  constructor(
    readonly gpu: Gpu,
    readonly seed: number,
    offset = 0,
  ) {
    checkSeed("Generator", seed, []);
    checkOffset("Generator", offset, 0, []);
    this.offset_ = offset;
  }

  get offset(): number {
    return this.offset_;
  }

  /** Moves to a stream position, e.g. one restored from a checkpoint. */
  set offset(value: number) {
    checkOffset("Generator", value, 0, []);
    this.offset_ = value;
  }

  /** Returns the current offset and moves past `size` elements, rounded up to whole blocks. */
  advance(size: number): number {
    const start = this.offset_;
    checkOffset("Generator", start, size, []);
    this.offset_ = start + Math.ceil(size / 4) * 4;
    return start;
  }

  uniform(shape: Shape): Tensor {
    return randomUniform(this.gpu, shape, this.seed, this.advance(sizeOf(shape)));
  }

  normal(shape: Shape, mean = 0, std = 1): Tensor {
    return randomNormal(this.gpu, shape, this.seed, this.advance(sizeOf(shape)), mean, std);
  }
}
