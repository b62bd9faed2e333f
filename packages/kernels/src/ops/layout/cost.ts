/** FLOPs and bytes of the layout kernels, for the profiler. */

/** A copy of `size` f32 values (slice copy, permute). */
export function copyCost(size: number) {
  return { flops: 0, bytes: 8 * size };
}

/** Upsampling reads the input and writes the output (forward); the backward adds `flops` values. */
export function upsampleCost(inputSize: number, outputSize: number, flops: number) {
  return { flops, bytes: 4 * (inputSize + outputSize) };
}
