/**
 * Which softmax variant runs, as a pure function of the adapter kind and the row layout (tested
 * without a GPU in test/kernels/softmax.test.ts).
 */
import type { AdapterKind } from "../../runtime/device.ts";
import type { SoftmaxLayout } from "./layout.ts";

export type SoftmaxVariant = "cpu-rows" | "gpu-workgroup";
export const SOFTMAX_VARIANTS: readonly SoftmaxVariant[] = ["cpu-rows", "gpu-workgroup"];

/**
 * Per-row threads pay off on the CPU adapter only when rows are few and long (a single row per lane
 * would leave the SIMD lanes of a core idle); GPUs always want a workgroup per row. Takes a `Gpu` or
 * anything with its `kind`.
 */
export function chooseSoftmaxVariant(
  adapter: { readonly kind: AdapterKind },
  layout: SoftmaxLayout,
): SoftmaxVariant {
  if (adapter.kind !== "cpu") return "gpu-workgroup";
  return layout.rows < 32 && layout.length >= 4096 ? "gpu-workgroup" : "cpu-rows";
}
