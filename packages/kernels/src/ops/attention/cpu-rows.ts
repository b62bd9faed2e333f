/**
 * Variant "cpu-rows" (llvmpipe): no workgroup memory. Each SIMD lane loads a different row of the
 * shared block and `subgroupBroadcast` hands it to the others: llvmpipe turns a load of one address by
 * every lane into one scalar load per lane, while a broadcast is a register shuffle. Needs subgroups
 * of >= 8 lanes (llvmpipe has them); a CPU adapter without them runs "gpu-tiled", correct anywhere.
 * Blocks are 16 rows (two subgroup loads; more only grows the shader).
 */
import { SUBGROUP_LANES } from "./choose.ts";
import { variantKernels } from "./chunked-scores.ts";
import { type AttentionKernels, type AttentionVariantSpec, type SharedBlock, uniformSpec } from "./common.ts";

export function subgroupBlock(
  _buffers: string[],
  rowBase: string,
  count: string,
  block: number,
): SharedBlock {
  const groups = Array.from({ length: block / SUBGROUP_LANES }, (_, g) => g);
  return {
    declarations: "",
    stage: groups
      .map(
        (g) =>
          `let own${g} = (${rowBase} + min(start + ${g * SUBGROUP_LANES}u + subgroupLane % ${SUBGROUP_LANES}u, ${count} - 1u)) * vectors;`,
      )
      .join("\n    "),
    loadsFor: (used) =>
      used.flatMap((buffer) => groups.map((g) => `let ${buffer}Own${g} = ${buffer}[own${g} + c];`)).join(" "),
    fetch: (buffer, t) =>
      `subgroupBroadcast(${buffer}Own${Math.floor(t / SUBGROUP_LANES)}, ${t % SUBGROUP_LANES}u)`,
    finish: "",
  };
}

export const CPU_ROWS_SPEC: AttentionVariantSpec = uniformSpec(subgroupBlock, 16, true);

export const CPU_ROWS: AttentionKernels = variantKernels(CPU_ROWS_SPEC);
