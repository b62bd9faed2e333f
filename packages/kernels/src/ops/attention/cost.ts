/** The attention shape and the FLOPs and bytes of its kernels, for the profiler and the benchmarks. */

export interface AttentionShape {
  batch: number;
  heads: number;
  queryLength: number;
  keyLength: number;
  headDim: number;
}

/**
 * Algorithmic work (FlashAttention's convention): forward = 2 matmuls (4 D FLOPs per query-key pair)
 * plus the softmax; backward = 5 matmuls (10 D). Bytes count each tensor once, read or written.
 */
export function attentionCost(shape: AttentionShape) {
  const { batch, heads, queryLength, keyLength, headDim } = shape;
  const pairs = batch * heads * queryLength * keyLength;
  const queryBytes = 4 * batch * heads * queryLength * headDim;
  const keyBytes = 4 * batch * heads * keyLength * headDim;
  return {
    forwardFlops: pairs * (4 * headDim + 4),
    forwardBytes: 2 * queryBytes + 2 * keyBytes + 4 * batch * heads * queryLength,
    backwardFlops: pairs * (10 * headDim + 6),
    backwardBytes: 4 * queryBytes + 4 * keyBytes + 8 * batch * heads * queryLength,
  };
}
