/** FLOPs and bytes of a binary kernel (either variant), for the profiler. */
export function binaryCost(aSize: number, bSize: number, outputSize: number) {
  return { flops: outputSize, bytes: 4 * (aSize + bSize + outputSize) };
}
