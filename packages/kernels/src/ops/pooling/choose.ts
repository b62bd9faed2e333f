/**
 * Which pooling variant runs. There is one today ("gather"); the chooser exists so a faster variant
 * can be added the way matmul and conv2d choose theirs (tested in test/kernels/pooling.test.ts).
 */
import type { AdapterKind } from "../../runtime/device.ts";

export type PoolVariant = "gather";
export const POOL_VARIANTS: readonly PoolVariant[] = ["gather"];

/** Every adapter runs the gather kernels. */
export function choosePoolVariant(_adapter: { readonly kind: AdapterKind }): PoolVariant {
  return "gather";
}
