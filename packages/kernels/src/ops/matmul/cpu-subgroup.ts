/**
 * Variant "cpu-subgroup" (lavapipe/llvmpipe with subgroups): the packed textures, layout and epilogue
 * of cpu-register-blocked (cpu-register-blocked.ts, cpu-layout.ts), with a different core. llvmpipe
 * runs a subgroup's 8 invocations as the lanes of one SIMD vector, and a `textureLoad` costs about the
 * same whether its address is the same in every lane or not (each lane gathers its own texel). So the
 * block's column operand is not loaded by every lane: lane l loads the texel of column
 * `column0 + 8s + l`, and `subgroupBroadcast` (a register shuffle) hands column j's texel to every
 * lane. Each invocation keeps ROWS x COLUMNS outputs (4 x 32) and per 4 k loads 4 row texels and 4
 * column texels for 512 multiply-adds (cpu-register-blocked: 20 texel loads per 256).
 *
 * Measured in one process with `packages/kernels/scripts/probe-matmul.ts` (1024^3, lavapipe, load
 * 10-13, GFLOP per CPU-second of the whole process, packing included): cpu-register-blocked 7.8-8.3;
 * 4 x 32 here 18.4-19.7; 2 x 8 with every lane loading every column texel itself 0.6x of the baseline,
 * the same with broadcasts 1.3x; 4 x 16 1.9x; 8 x 32 2.7x (largest blocks, most padding, slowest
 * compile). Workgroups of 8, 16 or 32 lanes within noise; unrolling k by 2 or writing explicit fma
 * chains changed nothing.
 *
 * Every lane runs the k loop (subgroup operations need the whole subgroup), also lanes past the last
 * row: they read padded or other batches' texels and store nothing.
 */
import { wgsl } from "../../runtime/kernel.ts";
import { PACKED_PRODUCT_HEADER_WGSL } from "./common.ts";
import type { CpuTile } from "./cpu-layout.ts";

/** Lanes that take part in one broadcast; llvmpipe's subgroups are 8 lanes (256-bit vectors). */
export const MATMUL_SUBGROUP_LANES = 8;

/** Register block of cpu-subgroup: 4 rows x 32 columns per invocation, 16 invocations per workgroup. */
export const MATMUL_SUBGROUP_TILE: CpuTile = { rows: 4, columns: 32, workgroupSize: 16 };

/** What the subgroup check looks at (a `Gpu` has it, and so does a plain object in a test). */
export interface SubgroupAdapter {
  readonly features?: { has(feature: string): boolean };
  readonly device?: { readonly adapterInfo?: { readonly subgroupMinSize?: number } };
}

/** True when the adapter has subgroups of at least MATMUL_SUBGROUP_LANES lanes. */
export function matmulCanUseSubgroups(adapter: SubgroupAdapter): boolean {
  const minimum = adapter.device?.adapterInfo?.subgroupMinSize ?? 0;
  return (adapter.features?.has("subgroups") ?? false) && minimum >= MATMUL_SUBGROUP_LANES;
}

/**
 * The template: `{{...}}` placeholders are the block's unrolled statements (one per row, column
 * quad or column texel), generated below so that every accumulator is a named register.
 */
export const MATMUL_CPU_SUBGROUP_WGSL = `
enable subgroups;
${PACKED_PRODUCT_HEADER_WGSL}
const ROWS = {{rows}}u;
const COLUMNS = {{columns}}u;
const WORKGROUP = {{workgroupSize}}u;
// Stores kernel outputs (row, column .. column + 3) that exist.
fn storeQuad(outputBase: u32, row: u32, column: u32, values: vec4<f32>) {
  if (row >= params.rows) { return; }
  for (var c = 0u; c < 4u; c++) {
    let j = column + c;
    if (j < params.columns) {
      let index = outputBase + row * params.outputRowStride + j * params.outputColumnStride;
      storeOutput(index, select(j, row, params.swapped != 0u), values[c]);
    }
  }
}
@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32, @builtin(subgroup_invocation_id) subgroupLane: u32) {
  let group = wid.x + wid.y * groups.x;
  let columnBlock = group % params.columnBlocks;
  let rowGroup = (group / params.columnBlocks) % params.rowGroups;
  let batch = group / (params.columnBlocks * params.rowGroups);
  if (batch >= params.batch) { return; }
  let row0 = (rowGroup * WORKGROUP + lane) * ROWS;
  let column0 = columnBlock * COLUMNS;
  let layerMask = (1u << params.layerShift) - 1u;
  // ROWS consecutive rows of a lane, and a block's COLUMNS columns, never cross a texture layer.
  let aRow = batch * params.aBatchRows + row0;
  let aLayer = aRow >> params.layerShift;
  let aY = aRow & layerMask;
  // This lane's column in each group of 8: the texel it loads for the whole subgroup.
  let bRow = batch * params.bBatchRows + column0 + subgroupLane % ${MATMUL_SUBGROUP_LANES}u;
  let bLayer = bRow >> params.layerShift;
  let bY = bRow & layerMask;
  {{declare}}
  for (var k4 = 0u; k4 < params.depthTexels; k4++) {
    {{loadRows}}
    {{loadOwn}}
    {{accumulate}}
  }
  let outputBase = batch * params.outputBatchStride;
  {{store}}
}`;

/** The block's statements for a tile (rows x columns, columns a multiple of 8). */
function blockStatements(tile: CpuTile): Record<string, string> {
  const rows = Array.from({ length: tile.rows }, (_, i) => i);
  const quads = Array.from({ length: tile.columns / 4 }, (_, q) => q);
  const owns = Array.from({ length: tile.columns / MATMUL_SUBGROUP_LANES }, (_, s) => s);
  const lanes = MATMUL_SUBGROUP_LANES;
  const broadcast = (q: number, c: number) => {
    const column = 4 * q + c;
    return `subgroupBroadcast(own${Math.floor(column / lanes)}, ${column % lanes}u)`;
  };
  return {
    declare: rows.flatMap((i) => quads.map((q) => `var acc${i}_${q} = vec4<f32>(0.0);`)).join("\n  "),
    loadRows: rows
      .map((i) => `let a${i} = textureLoad(packedA, vec2<u32>(k4, aY + ${i}u), aLayer, 0);`)
      .join("\n    "),
    loadOwn: owns
      .map((s) => `let own${s} = textureLoad(packedB, vec2<u32>(k4, bY + ${s * lanes}u), bLayer, 0);`)
      .join("\n    "),
    // Four columns' texels as a matrix: (row texel) * matrix = the 4 dot products over these 4 k.
    accumulate: quads
      .map((q) =>
        [
          `let b${q} = mat4x4<f32>(${[0, 1, 2, 3].map((c) => broadcast(q, c)).join(", ")});`,
          ...rows.map((i) => `acc${i}_${q} += a${i} * b${q};`),
        ].join("\n    "),
      )
      .join("\n    "),
    store: rows
      .flatMap((i) =>
        quads.map((q) => `storeQuad(outputBase, row0 + ${i}u, column0 + ${4 * q}u, acc${i}_${q});`),
      )
      .join("\n  "),
  };
}

/** The product kernel exactly as launched. */
export const MATMUL_CPU_SUBGROUP_SOURCE = wgsl(MATMUL_CPU_SUBGROUP_WGSL, {
  rows: MATMUL_SUBGROUP_TILE.rows,
  columns: MATMUL_SUBGROUP_TILE.columns,
  workgroupSize: MATMUL_SUBGROUP_TILE.workgroupSize,
  ...blockStatements(MATMUL_SUBGROUP_TILE),
});
