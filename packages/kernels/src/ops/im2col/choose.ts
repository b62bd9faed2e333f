/**
 * Which im2col variant runs. There is one today ("gather": one invocation per output element, forward
 * and backward); the chooser exists so a faster variant (e.g. texture-packed for CPU adapters) can be
 * added the way matmul and conv2d choose theirs (tested in test/kernels/im2col.test.ts).
 */
import type { AdapterKind } from "../../runtime/device.ts";

export type Im2colVariant = "gather";
export const IM2COL_VARIANTS: readonly Im2colVariant[] = ["gather"];

/** Every adapter runs the gather kernels. */
export function chooseIm2colVariant(_adapter: { readonly kind: AdapterKind }): Im2colVariant {
  return "gather";
}
