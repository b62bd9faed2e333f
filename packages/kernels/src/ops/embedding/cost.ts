/** FLOPs and bytes of the embedding kernels, for the profiler. */

/** Forward: a copy (read table entry and id, write output). */
export function embeddingCost(outputSize: number, tokenCount: number) {
  return { flops: 0, bytes: 8 * outputSize + 4 * tokenCount };
}

/** Backward: one add per output element into the table gradient. */
export function embeddingBackwardCost(outputSize: number) {
  return { flops: outputSize, bytes: 12 * outputSize };
}
