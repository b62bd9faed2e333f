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
 * keeps (P, dS) for the chunk in a bounded scratch buffer (10 D per pair; chunked-scores.ts).
 */
export type AttentionBackward = "recompute" | "chunked-scores";
export const ATTENTION_BACKWARDS: readonly AttentionBackward[] = ["recompute", "chunked-scores"];

/**
 * The backward used when none is forced: chunked-scores on the CPU adapter, where every kernel runs
 * at the same FLOP rate so 10 D beats 14 D (measured in `cxr bench kernels --filter attention`); GPUs
 * keep "recompute" until measured there.
 */
export function chooseAttentionBackward(
  adapter: AttentionAdapter,
  _shape: AttentionShape,
): AttentionBackward {
  return adapter.kind === "cpu" ? "chunked-scores" : "recompute";
}
