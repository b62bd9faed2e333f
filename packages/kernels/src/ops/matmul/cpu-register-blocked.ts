/**
 * Variant "cpu-register-blocked" (lavapipe/llvmpipe): operands are first packed into rgba32float
 * textures (4 consecutive k per texel, zero past K; by the copy engine when rows are already
 * k-contiguous), then each invocation keeps a 4 x 16 block of outputs in registers and reads operands
 * only through `textureLoad`, 20 texel loads per 256 multiply-adds. No workgroup memory. On llvmpipe
 * every load with a per-lane address is per-lane scalar code, and texel fetches measured 1.2-1.6x
 * cheaper than vec4 buffer loads of the same packed data. The packing textures come from the shared
 * scratch texture pool (ops/common/texture-pool.ts).
 */
import type { Gpu } from "../../runtime/device.ts";
import { grid, launch, wgsl } from "../../runtime/kernel.ts";
import { OpError, type Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { type ScratchTexture, texturePool } from "../common/texture-pool.ts";
import { PACKED_PRODUCT_HEADER_WGSL } from "./common.ts";
import { type CpuTile, cpuLayout, cpuVariantLimit, layerShiftOf, MATMUL_CPU_TILE } from "./cpu-layout.ts";
import {
  type Epilogue,
  epilogueBindings,
  epilogueParams,
  type MatmulProblem,
  problemCost,
  stridesOfA,
  stridesOfB,
} from "./problem.ts";
import type { OperandLayout } from "./shapes.ts";

/**
 * Packs one operand into an rgba32float texture array for the CPU variant. Invocation (x, outer,
 * batch) writes packed row r = batch * rowsPerBatch + outer, texel x: elements k = 4x .. 4x+3 of that
 * operand row, zero past K so that padding adds nothing to the sums. (Padded rows are left as they
 * are: they only feed outputs that are never stored.) Packed row r lives at row r & (layer height - 1)
 * of layer r >> layerShift; the dispatch grid gives every coordinate directly because integer
 * division is slow on a CPU.
 */
export const MATMUL_PACK_WGSL = `
@group(0) @binding(0) var<storage, read> source: array<f32>;
@group(0) @binding(1) var packed: texture_storage_2d_array<rgba32float, write>;
struct Params {
  width: u32, rows: u32, rowsPerBatch: u32, depth: u32,
  batchStride: u32, outerStride: u32, depthStride: u32, layerShift: u32, rowOffset: u32,
}
@group(0) @binding(2) var<uniform> params: Params;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let x = gid.x;
  let outer = gid.y + params.rowOffset;
  let batch = gid.z;
  if (x >= params.width || outer >= params.rows) { return; }
  let base = batch * params.batchStride + outer * params.outerStride;
  var texel = vec4<f32>(0.0);
  for (var lane = 0u; lane < 4u; lane++) {
    let k = x * 4u + lane;
    if (k < params.depth) { texel[lane] = source[base + k * params.depthStride]; }
  }
  let packedRow = batch * params.rowsPerBatch + outer;
  let layerMask = (1u << params.layerShift) - 1u;
  textureStore(packed, vec2<u32>(x, packedRow & layerMask), packedRow >> params.layerShift, texel);
}`;

/**
 * The CPU variant's product over packed operands. The kernel computes P = R C^T, where R (packedA)
 * holds the operand whose rows become the kernel's rows and C (packedB) the one whose rows become its
 * columns: normally R = op(a) and C = op(b)^T; with the roles swapped (when that wastes fewer padded
 * lanes, e.g. few rows and many columns) R = op(b)^T, C = op(a) and P is the output transposed, which
 * the store strides undo. A workgroup owns WORKGROUP * ROWS kernel rows and COLUMNS kernel columns of
 * one batch; invocation `lane` computes ROWS consecutive rows. Block shape, measured on lavapipe at
 * 1024^3 (process CPU time): 4x16, 8x8 and 16x16 within noise of each other (16x16 spills registers);
 * 1 or 2 rows per lane 1.5-3x slower (more texel loads per multiply-add); workgroups of 8-64 lanes
 * alike, so 16 lanes keep few-row products from idling lanes.
 */
export const MATMUL_CPU_WGSL = `
${PACKED_PRODUCT_HEADER_WGSL}
const ROWS = {{rows}}u;
const COLUMN_VECTORS = {{columnVectors}}u;
const WORKGROUP = {{workgroupSize}}u;
@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  let group = wid.x + wid.y * groups.x;
  let columnBlock = group % params.columnBlocks;
  let rowGroup = (group / params.columnBlocks) % params.rowGroups;
  let batch = group / (params.columnBlocks * params.rowGroups);
  if (batch >= params.batch) { return; }
  let row0 = (rowGroup * WORKGROUP + lane) * ROWS;
  let column0 = columnBlock * COLUMN_VECTORS * 4u;
  let layerMask = (1u << params.layerShift) - 1u;
  let aRow = batch * params.aBatchRows + row0;
  let aLayer = aRow >> params.layerShift;
  let aY = aRow & layerMask;
  let bRow = batch * params.bBatchRows + column0;
  let bLayer = bRow >> params.layerShift;
  let bY = bRow & layerMask;
  var acc: array<vec4<f32>, ROWS * COLUMN_VECTORS>;
  if (row0 < params.rows) {
    for (var k4 = 0u; k4 < params.depthTexels; k4++) {
      // Four rows of C as the columns of a matrix: (a row texel of R) * matrix = 4 dot products.
      var bColumns: array<mat4x4<f32>, COLUMN_VECTORS>;
      for (var j = 0u; j < COLUMN_VECTORS; j++) {
        let y = bY + j * 4u;
        bColumns[j] = mat4x4<f32>(
          textureLoad(packedB, vec2<u32>(k4, y), bLayer, 0),
          textureLoad(packedB, vec2<u32>(k4, y + 1u), bLayer, 0),
          textureLoad(packedB, vec2<u32>(k4, y + 2u), bLayer, 0),
          textureLoad(packedB, vec2<u32>(k4, y + 3u), bLayer, 0));
      }
      for (var i = 0u; i < ROWS; i++) {
        let aTexel = textureLoad(packedA, vec2<u32>(k4, aY + i), aLayer, 0);
        for (var j = 0u; j < COLUMN_VECTORS; j++) { acc[i * COLUMN_VECTORS + j] += aTexel * bColumns[j]; }
      }
    }
  }
  let outputBase = batch * params.outputBatchStride;
  for (var i = 0u; i < ROWS; i++) {
    let row = row0 + i;
    if (row >= params.rows) { break; }
    for (var j = 0u; j < COLUMN_VECTORS * 4u; j++) {
      let column = column0 + j;
      if (column < params.columns) {
        let index = outputBase + row * params.outputRowStride + column * params.outputColumnStride;
        storeOutput(index, select(column, row, params.swapped != 0u), acc[i * COLUMN_VECTORS + j / 4u][j % 4u]);
      }
    }
  }
}`;

/** The product kernel exactly as launched (the template with the register block filled in). */
export const MATMUL_CPU_SOURCE = wgsl(MATMUL_CPU_WGSL, {
  rows: MATMUL_CPU_TILE.rows,
  columnVectors: MATMUL_CPU_TILE.columns / 4,
  workgroupSize: MATMUL_CPU_TILE.workgroupSize,
});

/** A packing texture: rows of `width` texels in layers of 2^layerShift rows, as a 2d-array view. */
interface PackedTexture {
  scratch: ScratchTexture;
  view: GPUTextureView;
}

/**
 * A texture for `rows` packed rows of `width` texels from the shared pool, by size class (width up to
 * a multiple of 16 texels, a single layer's height up to a multiple of 256 rows) so that similar
 * products share textures.
 */
function acquirePacked(gpu: Gpu, width: number, rows: number): PackedTexture {
  const layerHeight = 2 ** layerShiftOf(gpu.limits);
  const classWidth = Math.min(Math.ceil(width / 16) * 16, gpu.limits.maxTextureDimension2D);
  const layers = Math.ceil(rows / layerHeight);
  const height = layers > 1 ? layerHeight : Math.min(Math.ceil(rows / 256) * 256, layerHeight);
  const scratch = texturePool(gpu).acquire(classWidth, height, layers);
  // A 2d-array view even for one layer: the kernels declare texture_2d_array.
  return { scratch, view: scratch.texture.createView({ dimension: "2d-array" }) };
}

/** Largest packed-row count per pack dispatch: 65535 workgroups of 16 rows. */
const PACK_ROWS_PER_DISPATCH = 65535 * 16;

interface PackedOperand {
  tensor: Tensor;
  strides: OperandLayout;
  batches: number;
  /** Operand rows (kernel rows or columns) per batch, and their padded count in the texture. */
  rows: number;
  rowsPerBatch: number;
  depth: number;
}

/**
 * Rows already laid out as whole texels (k contiguous, K a multiple of 64 so each row is a multiple
 * of the 256-byte copy pitch) are copied into the texture by the copy engine instead of a shader.
 */
function canCopyRows(operand: PackedOperand): boolean {
  const { strides, depth } = operand;
  return strides.depthStride === 1 && strides.outerStride === depth && depth % 64 === 0;
}

function copyRows(gpu: Gpu, operand: PackedOperand, target: PackedTexture): void {
  const layerHeight = 2 ** layerShiftOf(gpu.limits);
  const encoder = gpu.commandEncoder();
  for (let batch = 0; batch < operand.batches; batch++) {
    let packedRow = batch * operand.rowsPerBatch;
    let sourceRow = 0;
    while (sourceRow < operand.rows) {
      const y = packedRow % layerHeight;
      const count = Math.min(operand.rows - sourceRow, layerHeight - y);
      const offset = 4 * (batch * operand.strides.batchStride + sourceRow * operand.depth);
      encoder.copyBufferToTexture(
        {
          buffer: operand.tensor.bufferFor("read"),
          offset,
          bytesPerRow: 4 * operand.depth,
          rowsPerImage: count,
        },
        { texture: target.scratch.texture, origin: [0, y, Math.floor(packedRow / layerHeight)] },
        [operand.depth / 4, count, 1],
      );
      packedRow += count;
      sourceRow += count;
    }
  }
}

function pack(gpu: Gpu, operand: PackedOperand, target: PackedTexture): void {
  if (canCopyRows(operand)) {
    copyRows(gpu, operand, target);
    return;
  }
  const width = Math.ceil(operand.depth / 4);
  for (let rowOffset = 0; rowOffset < operand.rows; rowOffset += PACK_ROWS_PER_DISPATCH) {
    const rows = Math.min(PACK_ROWS_PER_DISPATCH, operand.rows - rowOffset);
    launch(
      gpu,
      { name: "matmulPack", code: MATMUL_PACK_WGSL },
      {
        bindings: [operand.tensor, target.view],
        params: new Params().u32(
          width,
          operand.rows,
          operand.rowsPerBatch,
          operand.depth,
          operand.strides.batchStride,
          operand.strides.outerStride,
          operand.strides.depthStride,
          layerShiftOf(gpu.limits),
          rowOffset,
        ),
        workgroups: [Math.ceil(width / 16), Math.ceil(rows / 16), operand.batches],
        flops: 0,
        bytes: 4 * operand.batches * rows * operand.depth + 16 * operand.batches * rows * width,
      },
    );
  }
}

/**
 * A product kernel over the packed textures: its variant name, WGSL and register block. The kernel
 * takes this file's bindings and Params (packedA, packedB, the epilogue; cpu-subgroup.ts shares them).
 */
export interface PackedProductKernel {
  variant: string;
  code: string;
  tile: CpuTile;
}

const REGISTER_BLOCKED: PackedProductKernel = {
  variant: "cpu-register-blocked",
  code: MATMUL_CPU_SOURCE,
  tile: MATMUL_CPU_TILE,
};

/** Packs both operands and runs the product into `output` (by default with this file's kernel). */
export function dispatchCpu(
  problem: MatmulProblem,
  output: Tensor,
  epilogue: Epilogue,
  kernel: PackedProductKernel = REGISTER_BLOCKED,
): void {
  const gpu = output.gpu;
  const tile = kernel.tile;
  const geometry = { ...problem, aBatched: problem.a.batched, bBatched: problem.b.batched };
  const limit = cpuVariantLimit(gpu.limits, geometry, tile);
  if (limit) {
    throw new OpError("matmul", `variant ${kernel.variant} cannot pack these operands: ${limit}`, {
      a: problem.a.tensor,
      b: problem.b.tensor,
    });
  }
  const layout = cpuLayout(geometry, tile);
  const strides = { a: stridesOfA(problem), b: stridesOfB(problem) };
  const rowSide = layout.swapped ? "b" : "a";
  const columnSide = layout.swapped ? "a" : "b";
  const rowOperand: PackedOperand = {
    tensor: problem[rowSide].tensor,
    strides: strides[rowSide],
    batches: layout.rowsBatched ? problem.batch : 1,
    rows: layout.rows,
    rowsPerBatch: layout.paddedRows,
    depth: problem.K,
  };
  const columnOperand: PackedOperand = {
    tensor: problem[columnSide].tensor,
    strides: strides[columnSide],
    batches: layout.columnsBatched ? problem.batch : 1,
    rows: layout.columns,
    rowsPerBatch: layout.paddedColumns,
    depth: problem.K,
  };
  const packedA = acquirePacked(gpu, layout.width, rowOperand.batches * layout.paddedRows);
  const packedB = acquirePacked(gpu, layout.width, columnOperand.batches * layout.paddedColumns);
  pack(gpu, rowOperand, packedA);
  pack(gpu, columnOperand, packedB);
  const rowGroups = Math.ceil(layout.rows / (tile.rows * tile.workgroupSize));
  const columnBlocks = layout.paddedColumns / tile.columns;
  const groups = problem.batch * rowGroups * columnBlocks;
  const params = epilogueParams(problem, epilogue).u32(
    problem.batch,
    layout.rows,
    layout.columns,
    layout.width,
    rowGroups,
    columnBlocks,
    layout.rowsBatched ? layout.paddedRows : 0,
    layout.columnsBatched ? layout.paddedColumns : 0,
    layerShiftOf(gpu.limits),
    problem.M * problem.N,
    layout.swapped ? 1 : problem.N,
    layout.swapped ? problem.N : 1,
    layout.swapped ? 1 : 0,
  );
  launch(
    gpu,
    { name: "matmul", variant: kernel.variant, code: kernel.code },
    {
      bindings: [packedA.view, packedB.view, ...epilogueBindings(gpu, output, epilogue)],
      params,
      workgroups: grid(groups * tile.workgroupSize, tile.workgroupSize),
      ...problemCost(problem, epilogue),
    },
  );
  texturePool(gpu).release(packedA.scratch);
  texturePool(gpu).release(packedB.scratch);
}
