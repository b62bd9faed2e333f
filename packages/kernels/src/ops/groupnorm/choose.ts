/**
 * Which group norm variant runs, as a pure function of the adapter kind and the shape (tested without
 * a GPU in test/kernels/groupnorm.test.ts): the norm core's choice over one sample's groups (not
 * N x groups, so that a sample's result does not depend on the batch it is in).
 */
import type { AdapterKind } from "../../runtime/device.ts";
import type { Shape } from "../../runtime/tensor.ts";
import { CHANNEL_NORM_VARIANTS, type ChannelNormVariant, chooseNormVariant } from "../norm-core/choose.ts";

/**
 * "cpu-chunked": statistics split into contiguous chunks per invocation, merged, then a normalise
 * kernel (parallel within each group, no workgroup memory). "gpu-workgroup": the same with each
 * chunk reduced by a 256-invocation workgroup in workgroup memory. "cpu-fused": one invocation per
 * (n, group) streams its group (vec4, one-read statistics) and normalises, in one dispatch.
 * "naive": one invocation per (n, group), scalar loads, three serial passes: the benchmark baseline.
 */
export type GroupNormVariant = ChannelNormVariant;
export const GROUP_NORM_VARIANTS: readonly GroupNormVariant[] = CHANNEL_NORM_VARIANTS;

export function chooseGroupNormVariant(
  adapter: { readonly kind: AdapterKind },
  _shape: Shape,
  groups: number,
): GroupNormVariant {
  // By the groups of one sample, not N x groups: the fused and chunked kernels sum in different
  // orders, so a choice by the batch gave one sample different bits in another batch.
  return chooseNormVariant(adapter, groups);
}
