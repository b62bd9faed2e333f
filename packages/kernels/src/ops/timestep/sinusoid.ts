/**
 * The one timestep-embedding variant ("default"): one invocation per output element forward, one per
 * timestep backward. WGSL only promises sin/cos to 2^-11 absolute, and arguments reach ~1000
 * radians, so `sinCos` reduces the argument by quarter turns itself (Cody-Waite, three parts of
 * pi/2; the first part has 8 significant bits, so k * part1 and the subtraction are exact for
 * |k| < 2^15) and evaluates Taylor polynomials on [-pi/4, pi/4] (truncation error < 1e-11).
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/** Quarter-turn reduction and polynomials; returns vec2(sin(x), cos(x)). */
const SIN_COS_WGSL = `
const HALF_PI_1: f32 = 1.5703125;
const HALF_PI_2: f32 = 4.838267923e-4;
const HALF_PI_3: f32 = 2.563282919e-12;
fn sinCos(x: f32) -> vec2<f32> {
  let k = round(x * 0.636619772);
  let r = ((x - k * HALF_PI_1) - k * HALF_PI_2) - k * HALF_PI_3;
  let r2 = r * r;
  let s = r * (1.0 - r2 * (0.16666667 - r2 * (0.0083333333 - r2 * (0.00019841270 - r2 * (0.0000027557319 - r2 * 0.000000025052108)))));
  let c = 1.0 - r2 * (0.5 - r2 * (0.041666667 - r2 * (0.0013888889 - r2 * (0.000024801587 - r2 * 0.00000027557319))));
  switch (u32(i32(k) & 3)) {
    case 0u: { return vec2<f32>(s, c); }
    case 1u: { return vec2<f32>(c, -s); }
    case 2u: { return vec2<f32>(-s, -c); }
    default: { return vec2<f32>(-c, s); }
  }
}`;

/** emb[b, column]: sin or cos of scale * (t_b * f_j); the padding column of an odd dim is 0. */
const FORWARD = `
@group(0) @binding(0) var<storage, read> timesteps: array<f32>;
@group(0) @binding(1) var<storage, read> frequencies: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
struct Params { size: u32, dim: u32, half: u32, flip: u32, scale: f32 }
@group(0) @binding(3) var<uniform> params: Params;
${SIN_COS_WGSL}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let column = index % params.dim;
  let row = index / params.dim;
  if (column >= 2u * params.half) { output[index] = 0.0; return; }
  let j = column % params.half;
  let firstHalf = column < params.half;
  let argument = params.scale * (timesteps[row] * frequencies[j]);
  let sc = sinCos(argument);
  // Sines first unless flipped.
  output[index] = select(select(sc.x, sc.y, firstHalf), select(sc.y, sc.x, firstHalf), params.flip == 0u);
}`;

/** dL/dt_b = sum_j scale f_j (dy_sin cos(a) - dy_cos sin(a)), one invocation per timestep. */
const BACKWARD = `
@group(0) @binding(0) var<storage, read> timesteps: array<f32>;
@group(0) @binding(1) var<storage, read> frequencies: array<f32>;
@group(0) @binding(2) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(3) var<storage, read_write> gradTimesteps: array<f32>;
struct Params { batch: u32, dim: u32, half: u32, flip: u32, scale: f32 }
@group(0) @binding(4) var<uniform> params: Params;
${SIN_COS_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.x;
  if (row >= params.batch) { return; }
  var total = 0.0;
  for (var j = 0u; j < params.half; j++) {
    let f = params.scale * frequencies[j];
    let sc = sinCos(params.scale * (timesteps[row] * frequencies[j]));
    var gradSin = gradOutput[row * params.dim + j];
    var gradCos = gradOutput[row * params.dim + params.half + j];
    if (params.flip != 0u) { let swap = gradSin; gradSin = gradCos; gradCos = swap; }
    total += f * (gradSin * sc.y - gradCos * sc.x);
  }
  gradTimesteps[row] = total;
}`;

export const SINUSOID = { forward: FORWARD, backward: BACKWARD } as const;
