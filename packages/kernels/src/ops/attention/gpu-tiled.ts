/**
 * Variant "gpu-tiled": the workgroup stages each shared block in workgroup memory, then every row
 * reads it there. Blocks are 8 rows, so two tiles at the largest head dimension fit WebGPU's
 * guaranteed 16 KiB of workgroup memory. Correct on any adapter; the choice on GPUs.
 */
import { variantKernels } from "./chunked-scores.ts";
import { type AttentionKernels, type AttentionVariantSpec, type SharedBlock, uniformSpec } from "./common.ts";

function workgroupTiles(buffers: string[], rowBase: string, count: string, block: number): SharedBlock {
  return {
    declarations: buffers
      .map((buffer) => `var<workgroup> ${buffer}Tile: array<Row, ${block}u * MAX_VECTORS>;`)
      .join("\n"),
    stage: `for (var i = lane; i < ${block}u * vectors; i += ROWS) {
      let at = (${rowBase} + min(start + i / vectors, ${count} - 1u)) * vectors + i % vectors;
      ${buffers.map((buffer) => `${buffer}Tile[i] = ${buffer}[at];`).join(" ")}
    }
    workgroupBarrier();`,
    loadsFor: () => "",
    fetch: (buffer, t) => `${buffer}Tile[${t}u * vectors + c]`,
    finish: "workgroupBarrier();",
  };
}

export const GPU_TILED_SPEC: AttentionVariantSpec = uniformSpec(workgroupTiles, 8, false);

export const GPU_TILED: AttentionKernels = variantKernels(GPU_TILED_SPEC);
