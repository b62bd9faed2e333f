/** FLOPs and bytes of the timestep-embedding kernels, for the profiler. */

/** Forward: ~30 FLOPs per output (argument reduction and two polynomials). */
export function timestepEmbeddingCost(batch: number, dim: number, half: number) {
  return { flops: 30 * batch * dim, bytes: 4 * (batch * dim + batch + half) };
}

export function timestepEmbeddingBackwardCost(batch: number, dim: number, half: number) {
  return { flops: 40 * batch * half, bytes: 4 * (batch * dim + 2 * batch + half) };
}
