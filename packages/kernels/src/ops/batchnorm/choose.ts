/**
 * Which batch norm variant runs, as a pure function of the adapter kind and the shape (tested without
 * a GPU in test/kernels/batchnorm.test.ts): the norm core's choice over C statistics.
 */
import type { AdapterKind } from "../../runtime/device.ts";
import type { Shape } from "../../runtime/tensor.ts";
import { CHANNEL_NORM_VARIANTS, type ChannelNormVariant, chooseNormVariant } from "../norm-core/choose.ts";

/**
 * As group norm's variants, with one statistic per channel: "cpu-chunked", "gpu-workgroup",
 * "cpu-fused" (one invocation per channel streams N x H x W values, one dispatch; chosen on lavapipe
 * when there are enough channels) and "naive" (one invocation per channel, scalar, three serial
 * passes: the benchmark baseline). Eval mode runs the same normalise kernel for every variant.
 */
export type BatchNormVariant = ChannelNormVariant;
export const BATCH_NORM_VARIANTS: readonly BatchNormVariant[] = CHANNEL_NORM_VARIANTS;

export function chooseBatchNormVariant(
  adapter: { readonly kind: AdapterKind },
  shape: Shape,
): BatchNormVariant {
  return chooseNormVariant(adapter, shape[1]);
}
