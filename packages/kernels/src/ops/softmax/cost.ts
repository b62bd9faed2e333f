/** FLOPs and bytes of the softmax kernels, for the profiler and the benchmarks. */

/** Forward: ~6 FLOPs per element (scale, two exp2 in the online pass, one exp2 and a multiply on write). */
export function softmaxCost(size: number) {
  return { flops: 8 * size, bytes: 12 * size };
}

export function softmaxBackwardCost(size: number) {
  return { flops: 5 * size, bytes: 16 * size };
}
