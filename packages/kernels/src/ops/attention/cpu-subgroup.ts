/**
 * Variant "cpu-subgroup" (llvmpipe with subgroups of >= 8 lanes): cpu-rows' subgroup-broadcast
 * delivery (each lane loads one row of the shared block, `subgroupBroadcast` hands it to the others;
 * cpu-rows.ts) with matmul cpu-subgroup's larger register block in the forward: 4 query rows per
 * invocation and blocks of 32 keys, so each broadcast key or value feeds 4 rows' multiply-adds (2 in
 * cpu-rows), the same shuffles per multiply-add as matmul's 4 x 32 block, and each output-row round
 * trip (the accumulator lives in the output rows) is shared by 32 keys instead of 16.
 *
 * The backward keeps cpu-rows' shape (blocks of 16, 2 rows per invocation): larger blocks or more
 * rows made both chunked-scores kernels slower. Measured on llvmpipe (2 Zen 5 cores, load 10-13, kernel
 * alone at B1 H8 L1024 D64, process CPU ms, median of 5-7, `packages/kernels/scripts/probe-attention.ts`
 * and throwaway per-kernel probes): forward 16 x 2 (cpu-rows) 116-123, 32 x 2 111, 16 x 4 99-100,
 * 32 x 4 89 (cold compile 34 s wall at that load, 1 s from Mesa's disk cache); dQ + (P, dS) store
 * 16 x 2 196-203, 8 x 2 247, 16 x 4 239, 8 x 4 232, 32 x 2 260; dK/dV from (P, dS) 16 x 2 223-230, 8 x 2
 * 225, 16 x 4 265, 8 x 4 258, 32 x 2 275.
 */
import { variantKernels } from "./chunked-scores.ts";
import type { AttentionKernels, AttentionVariantSpec } from "./common.ts";
import { CPU_ROWS_SPEC } from "./cpu-rows.ts";

export const CPU_SUBGROUP_SPEC: AttentionVariantSpec = {
  ...CPU_ROWS_SPEC,
  forward: { block: 32, rowsPerInvocation: 4 },
};

export const CPU_SUBGROUP: AttentionKernels = variantKernels(CPU_SUBGROUP_SPEC);
