/**
 * Which conv2d variant runs, as a pure function of the adapter (kind, 2-D texture limit) and the
 * geometry (tested without a GPU in test/kernels/conv2d.test.ts).
 */
import type { AdapterKind } from "../../runtime/device.ts";
import { matmulCanUseSubgroups, type SubgroupAdapter } from "../matmul/cpu-subgroup.ts";
import { cpuTexturesFit } from "./cpu-layout.ts";
import type { Conv2dGeometry } from "./geometry.ts";

export type Conv2dVariant = "cpu-subgroup" | "cpu-texture" | "gpu-tiled" | "naive";
export const CONV2D_VARIANTS: readonly Conv2dVariant[] = [
  "cpu-subgroup",
  "cpu-texture",
  "gpu-tiled",
  "naive",
];

/** The variant for this adapter and shape: texture-packed register blocking on CPU adapters (when its
 * textures fit; cpu-subgroup, all three passes, where the adapter has subgroups of >= 8 lanes: faster
 * than cpu-texture side by side in `cxr bench kernels`, see the README), workgroup-memory
 * tiles everywhere else. Takes a `Gpu` or anything with its `kind` and `limits` (and `features`,
 * `device.adapterInfo` for the subgroup check). */
export function chooseConv2dVariant(
  adapter: {
    readonly kind: AdapterKind;
    readonly limits: { readonly maxTextureDimension2D: number };
  } & SubgroupAdapter,
  g: Conv2dGeometry,
): Conv2dVariant {
  if (adapter.kind !== "cpu" || !cpuTexturesFit(adapter.limits, g)) return "gpu-tiled";
  return matmulCanUseSubgroups(adapter) ? "cpu-subgroup" : "cpu-texture";
}
