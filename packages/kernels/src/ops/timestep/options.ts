/**
 * The timestep embedding's options and its f32 frequency table, shared by the launch (index.ts) and
 * the float64 reference (reference.ts).
 */
import { OpError } from "../../runtime/tensor.ts";

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

export interface ResolvedTimestepOptions {
  flipSinToCos: boolean;
  downscaleFreqShift: number;
  scale: number;
  maxPeriod: number;
}

/** The options with their defaults, checked against `dim`. */
export function resolveTimestepOptions(
  dim: number,
  options: TimestepEmbeddingOptions,
): ResolvedTimestepOptions {
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
  const { downscaleFreqShift, maxPeriod } = resolveTimestepOptions(dim, options);
  const half = Math.floor(dim / 2);
  const factor = Math.fround(-Math.log(maxPeriod));
  const divisor = Math.fround(half - downscaleFreqShift);
  const frequencies = new Float32Array(half);
  for (let j = 0; j < half; j++) {
    frequencies[j] = Math.exp(Math.fround(Math.fround(factor * j) / divisor));
  }
  return frequencies;
}
