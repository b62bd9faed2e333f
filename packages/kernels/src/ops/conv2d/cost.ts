/** FLOPs and bytes of a convolution, for the profiler and the benchmarks. */
import type { Conv2dGeometry } from "./geometry.ts";

/** FLOPs (multiply-add = 2) and bytes touched of the forward pass; each backward pass costs the same FLOPs. */
export function conv2dCost(g: Conv2dGeometry): { flops: number; bytes: number } {
  const taps = g.inPerGroup * g.kernelHeight * g.kernelWidth;
  const outputs = g.batch * g.outChannels * g.outHeight * g.outWidth;
  const inputs = g.batch * g.inChannels * g.height * g.width;
  return { flops: 2 * outputs * taps, bytes: 4 * (inputs + g.outChannels * taps + outputs) };
}
