/**
 * How the cpu-register-blocked variant lays a product out in packed textures: which operand gives the
 * kernel's rows, the padded sizes, the texture layer height, and why a problem may not fit. Pure
 * functions of the adapter's limits and the shape (the variant choice uses them without a device).
 */
import type { MatmulShape } from "./shapes.ts";

/** The adapter limits the packed layout depends on (a `GPUSupportedLimits` has them all). */
export interface PackingLimits {
  readonly maxTextureDimension2D: number;
  readonly maxTextureArrayLayers: number;
  readonly maxComputeWorkgroupsPerDimension: number;
}

/** A CPU variant's register block: outputs per invocation and invocations per workgroup. */
export interface CpuTile {
  readonly rows: number;
  readonly columns: number;
  readonly workgroupSize: number;
}

/** Register block of the cpu-register-blocked variant. */
export const MATMUL_CPU_TILE: CpuTile = { rows: 4, columns: 16, workgroupSize: 16 };

/**
 * Packed row r sits in layer r >> layerShift: layers are a power of two rows tall (the largest that
 * the adapter allows), so kernels find the layer with a shift instead of an integer division. A
 * one-layer texture is only as tall as it needs to be.
 */
export function layerShiftOf(limits: PackingLimits): number {
  return Math.floor(Math.log2(limits.maxTextureDimension2D));
}

/** Why `rows` packed rows of `width` texels do not fit in a texture array, or null when they do. */
function packingLimit(limits: PackingLimits, width: number, rows: number, batches: number): string | null {
  const maxDimension = limits.maxTextureDimension2D;
  if (width > maxDimension) {
    return `K=${width * 4} needs ${width} texels per packed row, more than the adapter's ${maxDimension}`;
  }
  const layers = Math.ceil(rows / 2 ** layerShiftOf(limits));
  if (layers > limits.maxTextureArrayLayers) {
    return `${rows} packed rows need ${layers} texture layers, more than the adapter's ${limits.maxTextureArrayLayers}`;
  }
  if (batches > limits.maxComputeWorkgroupsPerDimension) {
    return `${batches} batches exceed the adapter's ${limits.maxComputeWorkgroupsPerDimension} workgroups per dimension`;
  }
  return null;
}

/** A problem's sizes plus which operands carry the batch. */
export type PackingShape = MatmulShape & { aBatched: boolean; bBatched: boolean };

/** How the CPU variant lays out a problem: which operand gives the kernel's rows, padded sizes. */
export interface CpuLayout {
  /** Kernel rows come from b (output columns) and kernel columns from a (output rows). */
  swapped: boolean;
  rows: number;
  columns: number;
  paddedRows: number;
  paddedColumns: number;
  rowsBatched: boolean;
  columnsBatched: boolean;
  /** Texels per packed row: K / 4, rounded up. */
  width: number;
}

export function cpuLayout(problem: PackingShape, tile: CpuTile = MATMUL_CPU_TILE): CpuLayout {
  const { rows: blockRows, columns: blockColumns, workgroupSize } = tile;
  const groupRows = blockRows * workgroupSize;
  // Lanes past the last row and columns past the last one still run: count the padded work.
  const paddedWork = (rows: number, columns: number) =>
    Math.ceil(rows / groupRows) * groupRows * Math.ceil(columns / blockColumns) * blockColumns;
  const swapped = paddedWork(problem.N, problem.M) < paddedWork(problem.M, problem.N);
  const rows = swapped ? problem.N : problem.M;
  const columns = swapped ? problem.M : problem.N;
  return {
    swapped,
    rows,
    columns,
    paddedRows: Math.ceil(rows / blockRows) * blockRows,
    paddedColumns: Math.ceil(columns / blockColumns) * blockColumns,
    rowsBatched: swapped ? problem.bBatched : problem.aBatched,
    columnsBatched: swapped ? problem.aBatched : problem.bBatched,
    width: Math.ceil(problem.K / 4),
  };
}

/** Null when the CPU variant can pack this problem, else the reason it cannot. */
export function cpuVariantLimit(
  limits: PackingLimits,
  problem: PackingShape,
  tile: CpuTile = MATMUL_CPU_TILE,
): string | null {
  const layout = cpuLayout(problem, tile);
  const batches = problem.batch;
  return (
    packingLimit(limits, layout.width, (layout.rowsBatched ? batches : 1) * layout.paddedRows, batches) ??
    packingLimit(limits, layout.width, (layout.columnsBatched ? batches : 1) * layout.paddedColumns, batches)
  );
}
