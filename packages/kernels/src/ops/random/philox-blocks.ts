/**
 * The one random variant ("default"): one invocation per Philox block (4 stream elements), writing
 * the elements of its block that fall inside the draw; `uniform` and `normal` differ only in the
 * transform of the block's four words.
 */
import { LINEAR_INDEX_WGSL, wgsl } from "../../runtime/kernel.ts";
import { PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1, UNIFORM_SCALE } from "./reference.ts";

/**
 * Philox in WGSL. WGSL has no 64-bit integers, so mulhilo builds the high word of the 32x32 product
 * from 16-bit halves (every partial product fits in 32 bits).
 */
const PHILOX_WGSL = `
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

const RANDOM_UNIFORM_WGSL = wgsl(DRAW_TEMPLATE, {
  helpers: "",
  transform:
    "vec4<f32>(uniformFromBits(words.x), uniformFromBits(words.y), uniformFromBits(words.z), uniformFromBits(words.w))",
});
const RANDOM_NORMAL_WGSL = wgsl(DRAW_TEMPLATE, {
  helpers: BOX_MULLER_WGSL,
  transform: "vec4<f32>(params.mean) + params.deviation * boxMuller(words)",
});

export const PHILOX_BLOCKS = { uniform: RANDOM_UNIFORM_WGSL, normal: RANDOM_NORMAL_WGSL } as const;
