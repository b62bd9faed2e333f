/**
 * How a reduced loss splits its elements: each invocation of the partials pass sums one contiguous
 * chunk, then one invocation sums the (at most MAX_LOSS_PARTIALS) chunk partials. The scalar result
 * never leaves the GPU.
 */
export const MAX_LOSS_PARTIALS = 4096;

/** Contiguous chunk length for `size` elements: at least 256, at most MAX_LOSS_PARTIALS chunks. */
export function lossChunkLength(size: number): number {
  return Math.max(256, Math.ceil(size / MAX_LOSS_PARTIALS));
}
