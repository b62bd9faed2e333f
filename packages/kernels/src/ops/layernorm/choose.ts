/**
 * Which layer norm variant runs, as a pure function of the adapter kind (tested without a GPU in
 * test/kernels/layernorm.test.ts): the norm core's split statistics, chunked on the CPU adapter,
 * workgroup-reduced on GPUs. The shape does not enter today.
 */
import type { AdapterKind } from "../../runtime/device.ts";
import type { Shape } from "../../runtime/tensor.ts";
import { chooseMomentsVariant, MOMENTS_VARIANTS, type MomentsVariant } from "../norm-core/choose.ts";

export type LayerNormVariant = MomentsVariant;
export const LAYER_NORM_VARIANTS: readonly LayerNormVariant[] = MOMENTS_VARIANTS;

export function chooseLayerNormVariant(
  adapter: { readonly kind: AdapterKind },
  _shape: Shape,
): LayerNormVariant {
  return chooseMomentsVariant(adapter);
}
