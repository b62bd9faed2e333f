/** FLOPs and bytes of the pooling kernels, for the profiler and the benchmarks. */
import type { Window2d } from "../common/window.ts";

const outputsOf = (g: Window2d) => g.batch * g.channels * g.outHeight * g.outWidth;

/** Forward: every output reads its kH x kW window once. */
export function poolCost(g: Window2d): { flops: number; bytes: number } {
  const outputs = outputsOf(g);
  const taps = g.kernelHeight * g.kernelWidth;
  return { flops: outputs * taps, bytes: 4 * (outputs * taps + outputs) };
}

/** Backward: every input pixel gathers the output gradients of the windows covering it. */
export function poolBackwardCost(g: Window2d): { flops: number; bytes: number } {
  const outputs = outputsOf(g);
  const inputs = g.batch * g.channels * g.height * g.width;
  return { flops: outputs * g.kernelHeight * g.kernelWidth, bytes: 4 * (inputs + outputs * 2) };
}
