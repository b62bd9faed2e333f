/**
 * Sinusoidal timestep embedding, as diffusers' `get_timestep_embedding` computes it for the UNet:
 *
 *   half = floor(dim / 2)
 *   f_j  = exp(-ln(maxPeriod) * j / (half - downscaleFreqShift)),  j = 0 .. half-1
 *   a_bj = scale * t_b * f_j
 *   emb  = [sin(a) | cos(a)]  (flipSinToCos: [cos(a) | sin(a)]), zero-padded by one column for odd dim
 *
 * timesteps f32 [B] -> [B, dim]. The frequencies are rounded to f32 on the CPU in the order PyTorch
 * rounds them (exponent, division, exp each in float32), so both sides multiply the same numbers.
 * WGSL only promises sin/cos to 2^-11 absolute, and arguments reach ~1000 radians, so the kernel
 * reduces the argument by quarter turns itself (Cody-Waite, three parts of pi/2; the first part has
 * 8 significant bits, so k * part1 and the subtraction are exact for |k| < 2^15) and evaluates
 * Taylor polynomials on [-pi/4, pi/4] (truncation error < 1e-11).
 *
 * The gradient with respect to the timesteps exists (d sin(a)/dt = scale f cos(a), ...) and is
 * recorded when the timesteps require one; training never asks for it.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import { grid, LINEAR_INDEX_WGSL, launch } from "../runtime/kernel.ts";
import { OpError, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

export interface TimestepEmbeddingOptions {
  /** diffusers' `flip_sin_to_cos` (Stable Diffusion: true): cosines first. */
  flipSinToCos?: boolean;
  /** diffusers' `downscale_freq_shift` (the UNet's `freq_shift`; Stable Diffusion: 0). */
  downscaleFreqShift?: number;
  /** Multiplies the arguments (default 1). */
  scale?: number;
  /** Default 10000. */
  maxPeriod?: number;
}

interface ResolvedOptions {
  flipSinToCos: boolean;
  downscaleFreqShift: number;
  scale: number;
  maxPeriod: number;
}

function resolve(dim: number, options: TimestepEmbeddingOptions): ResolvedOptions {
  const resolved = {
    flipSinToCos: options.flipSinToCos ?? false,
    downscaleFreqShift: options.downscaleFreqShift ?? 1,
    scale: options.scale ?? 1,
    maxPeriod: options.maxPeriod ?? 10000,
  };
  if (!Number.isInteger(dim) || dim < 2) {
    throw new OpError("timestepEmbedding", `dim must be an integer >= 2, got ${dim}`);
  }
  const half = Math.floor(dim / 2);
  if (half - resolved.downscaleFreqShift === 0) {
    throw new OpError(
      "timestepEmbedding",
      `half the dimension (${half}) minus downscaleFreqShift (${resolved.downscaleFreqShift}) is 0`,
    );
  }
  if (!Number.isFinite(resolved.scale) || !(resolved.maxPeriod > 0)) {
    throw new OpError(
      "timestepEmbedding",
      `invalid scale ${resolved.scale} or maxPeriod ${resolved.maxPeriod}`,
    );
  }
  return resolved;
}

/**
 * The f32 frequencies, rounded as PyTorch rounds them: `-ln(maxPeriod) * arange(half)` (f32),
 * `/ (half - shift)` (f32), `exp` (f32).
 */
export function timestepFrequencies(dim: number, options: TimestepEmbeddingOptions = {}): Float32Array {
  const { downscaleFreqShift, maxPeriod } = resolve(dim, options);
  const half = Math.floor(dim / 2);
  const factor = Math.fround(-Math.log(maxPeriod));
  const divisor = Math.fround(half - downscaleFreqShift);
  const frequencies = new Float32Array(half);
  for (let j = 0; j < half; j++) {
    frequencies[j] = Math.exp(Math.fround(Math.fround(factor * j) / divisor));
  }
  return frequencies;
}

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

export const TIMESTEP_EMBEDDING_WGSL = `
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

export const TIMESTEP_EMBEDDING_BACKWARD_WGSL = `
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

/** timesteps f32 [B] -> [B, dim]. `frequencies` from `timestepFrequencies` may be passed in (kept on the GPU). */
export function timestepEmbedding(
  timesteps: Tensor,
  dim: number,
  options: TimestepEmbeddingOptions = {},
  frequencies?: Tensor,
): Tensor {
  const resolved = resolve(dim, options);
  if (timesteps.dtype !== "f32" || timesteps.rank !== 1) {
    throw new OpError("timestepEmbedding", "timesteps must be an f32 tensor [batch]", { timesteps });
  }
  const half = Math.floor(dim / 2);
  const gpu = timesteps.gpu;
  const ownFrequencies = frequencies === undefined;
  const table = frequencies ?? Tensor.upload(gpu, timestepFrequencies(dim, options), [half]);
  if (table.rank !== 1 || table.shape[0] !== half || table.dtype !== "f32") {
    throw new OpError("timestepEmbedding", `frequencies must be f32 [${half}]`, { frequencies: table });
  }
  const batch = timesteps.shape[0];
  const output = Tensor.empty(gpu, [batch, dim]);
  const flip = resolved.flipSinToCos ? 1 : 0;
  launch(
    gpu,
    { name: "timestepEmbedding", code: TIMESTEP_EMBEDDING_WGSL },
    {
      bindings: [timesteps, table, output],
      params: new Params().u32(output.size, dim, half, flip).f32(resolved.scale),
      workgroups: grid(output.size, 256),
      flops: 30 * output.size,
      bytes: 4 * (output.size + batch + half),
    },
  );
  if (needsGrad(timesteps)) {
    record("timestepEmbedding", [timesteps], [output], ([gradOutput]) => {
      const gradTimesteps = Tensor.empty(gpu, [batch]);
      launch(
        gpu,
        { name: "timestepEmbeddingBackward", code: TIMESTEP_EMBEDDING_BACKWARD_WGSL },
        {
          bindings: [timesteps, table, gradOutput!, gradTimesteps],
          params: new Params().u32(batch, dim, half, flip).f32(resolved.scale),
          workgroups: grid(batch, 64),
          flops: 40 * batch * half,
          bytes: 4 * (batch * dim + 2 * batch + half),
        },
      );
      if (ownFrequencies) table.release();
      return [gradTimesteps];
    });
  } else if (ownFrequencies) {
    table.release();
  }
  return output;
}

/**
 * Float64 reference: the f32 frequencies, the argument rounded to f32 where PyTorch rounds it
 * (t * f, then scale *), sine and cosine in float64. `roundArguments = false` keeps them exact
 * (for finite differences, which a rounding step would flatten).
 */
export const timestepEmbeddingReference = {
  forward(
    timesteps: ArrayLike<number>,
    dim: number,
    options: TimestepEmbeddingOptions = {},
    roundArguments = true,
  ): Float64Array {
    const resolved = resolve(dim, options);
    const frequencies = timestepFrequencies(dim, options);
    const half = frequencies.length;
    const output = new Float64Array(timesteps.length * dim);
    for (let b = 0; b < timesteps.length; b++) {
      for (let j = 0; j < half; j++) {
        const argument = roundArguments
          ? Math.fround(resolved.scale * Math.fround(timesteps[b] * frequencies[j]))
          : resolved.scale * timesteps[b] * frequencies[j];
        const [first, second] = resolved.flipSinToCos
          ? [Math.cos(argument), Math.sin(argument)]
          : [Math.sin(argument), Math.cos(argument)];
        output[b * dim + j] = first;
        output[b * dim + half + j] = second;
      }
    }
    return output;
  },
  backward(
    timesteps: ArrayLike<number>,
    dim: number,
    gradOutput: ArrayLike<number>,
    options: TimestepEmbeddingOptions = {},
    roundArguments = true,
  ): Float64Array {
    const resolved = resolve(dim, options);
    const frequencies = timestepFrequencies(dim, options);
    const half = frequencies.length;
    const grad = new Float64Array(timesteps.length);
    for (let b = 0; b < timesteps.length; b++) {
      for (let j = 0; j < half; j++) {
        const f = resolved.scale * frequencies[j];
        const argument = roundArguments
          ? Math.fround(resolved.scale * Math.fround(timesteps[b] * frequencies[j]))
          : f * timesteps[b];
        let gradSin = gradOutput[b * dim + j];
        let gradCos = gradOutput[b * dim + half + j];
        if (resolved.flipSinToCos) [gradSin, gradCos] = [gradCos, gradSin];
        grad[b] += f * (gradSin * Math.cos(argument) - gradCos * Math.sin(argument));
      }
    }
    return grad;
  },
};
