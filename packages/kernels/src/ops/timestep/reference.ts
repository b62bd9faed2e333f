/**
 * Float64 reference of the timestep embedding: the f32 frequencies, the argument rounded to f32
 * where PyTorch rounds it (t * f, then scale *), sine and cosine in float64. `roundArguments = false`
 * keeps them exact (for finite differences, which a rounding step would flatten).
 * `timestepOpReference` is the same behind the shared op-reference interface.
 */
import type { OpReference } from "../common/reference.ts";
import { resolveTimestepOptions, type TimestepEmbeddingOptions, timestepFrequencies } from "./options.ts";

export const timestepEmbeddingReference = {
  forward(
    timesteps: ArrayLike<number>,
    dim: number,
    options: TimestepEmbeddingOptions = {},
    roundArguments = true,
  ): Float64Array {
    const resolved = resolveTimestepOptions(dim, options);
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
    const resolved = resolveTimestepOptions(dim, options);
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

/** What a timestep-embedding call is: the width, the options, and whether arguments round to f32. */
export interface TimestepParams {
  dim: number;
  options: TimestepEmbeddingOptions;
  /** Default true (what the GPU computes); false for finite differences. */
  roundArguments?: boolean;
}

/** `timestepEmbeddingReference` behind the shared interface: one input (the timesteps), its gradient. */
export const timestepOpReference: OpReference<TimestepParams> = {
  forward: ([t], { dim, options, roundArguments }) =>
    timestepEmbeddingReference.forward(t, dim, options, roundArguments ?? true),
  backward: ([t], gradOutput, { dim, options, roundArguments }) => [
    timestepEmbeddingReference.backward(t, dim, gradOutput, options, roundArguments ?? true),
  ],
};
