/**
 * Which attention variant runs, as a pure function of the adapter (its kind and whether it has
 * subgroups of >= 8 lanes) and the shape; tested without a GPU in test/kernels/attention.test.ts.
 * A `Gpu` satisfies `AttentionAdapter`, and so does a plain object in a test.
 */
import type { AdapterKind } from "../../runtime/device.ts";
import type { AttentionShape } from "./cost.ts";

export type AttentionVariant = "cpu-subgroup" | "cpu-rows" | "gpu-tiled";
export const ATTENTION_VARIANTS: readonly AttentionVariant[] = ["cpu-subgroup", "cpu-rows", "gpu-tiled"];

/** The variants that need subgroups of >= SUBGROUP_LANES lanes. */
export const SUBGROUP_VARIANTS: readonly AttentionVariant[] = ["cpu-subgroup", "cpu-rows"];

/** Lanes that share one subgroup load; llvmpipe's subgroups are 8 lanes (256-bit vectors). */
export const SUBGROUP_LANES = 8;

/** What the choice looks at: the adapter kind and its subgroup support. */
export interface AttentionAdapter {
  readonly kind: AdapterKind;
  readonly features: { has(feature: string): boolean };
  readonly device: { readonly adapterInfo?: { readonly subgroupMinSize?: number } };
}

/** True when `subgroupBroadcast` over SUBGROUP_LANES lanes is available on this adapter. */
export function attentionCanUseSubgroups(adapter: Omit<AttentionAdapter, "kind">): boolean {
  const minimum = adapter.device.adapterInfo?.subgroupMinSize ?? 0;
  return adapter.features.has("subgroups") && minimum >= SUBGROUP_LANES;
}

/**
 * On the CPU adapter, workgroup-memory tiles only add barriers and per-lane loads, so it runs
 * "cpu-subgroup" (cpu-rows' broadcasts with a 4-row, 32-key forward block) when it has subgroups;
 * GPUs, and CPU adapters without subgroups, run "gpu-tiled". "cpu-rows" is only run when forced (the
 * baseline in benchmarks). The shape does not change the choice today; it is part of the signature so
 * a split-K variant for short query blocks can be chosen here.
 */
export function chooseAttentionVariant(adapter: AttentionAdapter, _shape: AttentionShape): AttentionVariant {
  return adapter.kind === "cpu" && attentionCanUseSubgroups(adapter) ? "cpu-subgroup" : "gpu-tiled";
}

/**
 * How the backward runs: "recompute" computes the scores twice (per query row for dQ, per key row for
 * dK and dV, 14 D FLOPs per pair); "chunked-scores" computes them once per chunk of query rows and
 * keeps (P, dS) for the chunk in a bounded scratch buffer (10 D per pair; chunked-scores.ts);
 * "chunked-gemm" keeps them too and does dQ, dK and dV as register-blocked products over them
 * (10 D per pair; needs a subgroup variant; chunked-gemm.ts).
 */
export type AttentionBackward = "recompute" | "chunked-scores" | "chunked-gemm";
export const ATTENTION_BACKWARDS: readonly AttentionBackward[] = [
  "recompute",
  "chunked-scores",
  "chunked-gemm",
];

/**
 * Keys from which the CPU adapter's default backward is chunked-gemm: its score kernel gives each
 * workgroup 256 keys (64 invocations x 4), so shorter key sequences (cross-attention to 77 text tokens)
 * leave most of its lanes idle. Measured on llvmpipe (2 Zen 5 cores, B2 H2 Lq 1024 D64, forward +
 * backward wall ms, chunked-scores / chunked-gemm): Lk 77 21.5 / 25.0, 128 26.3 / 27.5, 256 41.4 / 35.0,
 * 512 73.0 / 54.5, 1024 131.0 / 95.4.
 */
export const CHUNKED_GEMM_MIN_KEYS = 256;

/**
 * The backward used when none is forced: on the CPU adapter chunked-gemm with a subgroup variant and
 * at least CHUNKED_GEMM_MIN_KEYS keys, chunked-scores otherwise (10 D beats 14 D there, every kernel
 * running at about the same FLOP rate; `cxr bench kernels --filter attention` measures them side by
 * side); GPUs keep "recompute" until measured there. `variant` defaults to `chooseAttentionVariant`'s.
 */
export function chooseAttentionBackward(
  adapter: AttentionAdapter,
  shape: AttentionShape,
  variant: AttentionVariant = chooseAttentionVariant(adapter, shape),
): AttentionBackward {
  if (adapter.kind !== "cpu") return "recompute";
  return SUBGROUP_VARIANTS.includes(variant) && shape.keyLength >= CHUNKED_GEMM_MIN_KEYS
    ? "chunked-gemm"
    : "chunked-scores";
}
