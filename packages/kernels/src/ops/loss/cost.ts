/** FLOPs and bytes of the loss kernels, for the profiler. */

/** An MSE pass over `size` elements touching `operands` arrays of that size. */
export function lossCost(size: number, operands: number) {
  return { flops: 4 * size, bytes: 4 * operands * size };
}

/** A pass over the chunk partials (`values` numbers per chunk). */
export function lossFinalizeCost(chunks: number, values: 1 | 2) {
  return { flops: values * chunks, bytes: 4 * values * chunks };
}

export function bcePartialsCost(size: number, masked: boolean) {
  return { flops: 12 * size, bytes: 4 * (masked ? 3 : 2) * size };
}

export function bceBackwardCost(size: number, masked: boolean) {
  return { flops: 8 * size, bytes: 4 * (masked ? 4 : 3) * size };
}
