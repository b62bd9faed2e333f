/**
 * Which norm design runs, as pure functions of the adapter kind and the number of statistics (tested
 * without a GPU in test/kernels/norm-core.test.ts). Group, batch and layer norm all choose here.
 */
import type { AdapterKind } from "../../runtime/device.ts";

type Adapter = { readonly kind: AdapterKind };

/**
 * How the split statistics are computed. "cpu-chunked": each invocation reads one contiguous chunk
 * once (shifted sums, exact re-read when ill-conditioned), no workgroup memory (fast on lavapipe).
 * "gpu-workgroup": 256 invocations read a chunk with coalesced strides and reduce it in workgroup
 * memory, two passes (mean, then squared deviations) over the chunk (fast on GPUs).
 */
export type MomentsVariant = "cpu-chunked" | "gpu-workgroup";
export const MOMENTS_VARIANTS: readonly MomentsVariant[] = ["cpu-chunked", "gpu-workgroup"];

/**
 * Group and batch norm's designs: the two split-statistics ones, "cpu-fused" (one invocation per
 * statistic streams its values and normalises, one dispatch) and "naive" (one invocation per
 * statistic, scalar loads, three serial passes: the benchmark baseline, never chosen).
 */
export type ChannelNormVariant = MomentsVariant | "cpu-fused" | "naive";
export const CHANNEL_NORM_VARIANTS: readonly ChannelNormVariant[] = [
  "cpu-chunked",
  "gpu-workgroup",
  "cpu-fused",
  "naive",
];

export function chooseMomentsVariant(adapter: Adapter): MomentsVariant {
  return adapter.kind === "cpu" ? "cpu-chunked" : "gpu-workgroup";
}

/**
 * Statistics from which the fused CPU kernel has enough independent work for lavapipe (2 threads x
 * 8 SIMD lanes, 4+ workgroups of 8 to balance): below it, the chunked path splits each group.
 * Measured on lavapipe at SD UNet and DenseNet shapes (README, Normalisation): with 64 groups the
 * fused kernel beat the chunked one at 40960 and at 2560 elements per group.
 */
export const FUSED_NORM_MIN_STATISTICS = 32;

/** One source of truth for the CPU choice between the fused and the chunked kernels. */
export function chooseNormVariant(adapter: Adapter, statistics: number): MomentsVariant | "cpu-fused" {
  const moments = chooseMomentsVariant(adapter);
  return moments === "cpu-chunked" && statistics >= FUSED_NORM_MIN_STATISTICS ? "cpu-fused" : moments;
}

/** Memory access pattern of the elementwise and row-sum kernels (channel-rows.ts explains both). */
export type AccessStyle = "cpu" | "gpu";

/** The access style a variant implies: the CPU-style statistics go with CPU-style access. */
export function accessStyleOf(adapter: Adapter, variant: string | undefined): AccessStyle {
  if (variant === "cpu-chunked" || variant === "cpu-fused") return "cpu";
  if (variant === "gpu-workgroup") return "gpu";
  return adapter.kind === "cpu" ? "cpu" : "gpu";
}
