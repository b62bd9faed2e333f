/**
 * Which matmul variant runs, as a pure function of the adapter (its kind and texture limits) and the
 * product's shape (tested without a GPU in test/kernels/matmul.test.ts).
 */
import type { AdapterKind } from "../../runtime/device.ts";
import { cpuVariantLimit, type PackingLimits } from "./cpu-layout.ts";
import { MATMUL_SUBGROUP_TILE, matmulCanUseSubgroups, type SubgroupAdapter } from "./cpu-subgroup.ts";
import type { MatmulShape } from "./shapes.ts";

export type MatmulVariant = "cpu-subgroup" | "cpu-register-blocked" | "gpu-tiled" | "naive";
export const MATMUL_VARIANTS: readonly MatmulVariant[] = [
  "cpu-subgroup",
  "cpu-register-blocked",
  "gpu-tiled",
  "naive",
];

/**
 * Products with this few columns are matrix-vector work: each output of the naive kernel already
 * reads its row and column once, and packing would cost more than it saves (measured on lavapipe:
 * 1x1280x320 and 2x1000x1024 run 1.4-3x faster naive; from 8 rows on packing wins by 2.7x or more).
 * Only the column count N decides, never the row count M: in x W^T the rows are the batch, and the
 * two variants sum in different orders, so a choice by M gave one sample different bits in another
 * batch (the UNet's time-embedding MLP at 2 vs 6 rows). Few-row products (M <= 4) therefore take
 * the packed kernel: slower there, but a small share of any model step.
 */
const CPU_NAIVE_MAX_COLUMNS = 4;

/**
 * The variant for this adapter and size: on a CPU adapter, textures and register blocks (cpu-subgroup
 * where the adapter has subgroups of >= 8 lanes, else cpu-register-blocked; the naive kernel for
 * matrix-vector shapes, the tiled kernel for operands too large to pack); on a GPU, workgroup-memory
 * tiles. Takes a `Gpu` or anything with its `kind` and `limits` (and `features`, `device.adapterInfo`
 * for the subgroup check; without them the adapter counts as having no subgroups).
 */
export function chooseMatmulVariant(
  adapter: { readonly kind: AdapterKind; readonly limits: PackingLimits } & SubgroupAdapter,
  shape: MatmulShape & { aBatched?: boolean; bBatched?: boolean },
): MatmulVariant {
  if (adapter.kind !== "cpu") return "gpu-tiled";
  if (shape.N <= CPU_NAIVE_MAX_COLUMNS) return "naive";
  const packing = { ...shape, aBatched: shape.aBatched ?? true, bBatched: shape.bBatched ?? true };
  if (cpuVariantLimit(adapter.limits, packing) !== null) return "gpu-tiled";
  const subgroupsFit =
    matmulCanUseSubgroups(adapter) && cpuVariantLimit(adapter.limits, packing, MATMUL_SUBGROUP_TILE) === null;
  return subgroupsFit ? "cpu-subgroup" : "cpu-register-blocked";
}
