/**
 * How the norm kernels split their work: chunks of the statistics pass, rows of the channel-row
 * kernels, loads per invocation. Pure functions of the shape and the variant or access style.
 */
import type { AccessStyle, MomentsVariant } from "./choose.ts";
import { lanesFor } from "./vectors.ts";

export interface MomentsPlan {
  variant: MomentsVariant;
  lanes: 4 | 1;
  rowUnits: number;
  chunks: number;
  chunkUnits: number;
}

/** At most this many chunks of one row in the CPU statistics pass (unless a row exceeds 256 Ki loads). */
const CPU_MAX_ROW_CHUNKS = 256;

/**
 * Chunking of `rows` rows of `rowLength` elements for the partials pass. On the CPU it does not
 * depend on `rows` (batch invariance); the GPU split still does (not measured there yet).
 */
export function planMoments(rows: number, rowLength: number, variant: MomentsVariant): MomentsPlan {
  const lanes = lanesFor(rowLength);
  const rowUnits = rowLength / lanes;
  let chunks: number;
  if (variant === "cpu-chunked") {
    // Long contiguous runs per invocation are fastest on lavapipe (measured: 128-2560 invocations of
    // one read each); ≤ 1024 loads per chunk keeps the occasional re-read in cache. The split depends
    // on the row length only, never on the row count: the chunks are summed apart and then combined,
    // so a split by the row count (once ceil(256 / rows)) gave one sample's statistics, and hence a
    // generated image, different bits in another batch. Up to 256 chunks of >= 64 loads per row
    // keep even a single row's statistics spread over the cores.
    chunks = Math.max(Math.ceil(rowUnits / 1024), Math.min(CPU_MAX_ROW_CHUNKS, Math.ceil(rowUnits / 64)), 1);
  } else {
    // Workgroups of 256 invocations, at least 256 loads per workgroup, ~1024 workgroups in flight.
    chunks = Math.max(1, Math.min(Math.ceil(1024 / rows), Math.ceil(rowUnits / 256)));
  }
  const chunkUnits = Math.ceil(rowUnits / chunks);
  return { variant, lanes, rowUnits, chunks: Math.ceil(rowUnits / chunkUnits), chunkUnits };
}

export interface MomentsGrouping {
  /** Number of statistics. */
  statistics: number;
  /** Rows per statistic: statistic o takes rows o + a * outerStride for a < outer. */
  outer: number;
  outerStride: number;
}

/** x as [rows = N * C, rowLength = spatial] with row r using statistic (r / statDivisor) % statModulus. */
export interface ChannelRows {
  samples: number;
  channels: number;
  rowLength: number;
  statDivisor: number;
  statModulus: number;
}

export interface StatisticRows {
  statistics: number;
  rowLength: number;
  baseStride: number;
  outer: number;
  outerStride: number;
  inner: number;
  channels: number;
}

/** Loads per invocation for elementwise kernels over `totalUnits` loads. */
export function loadsPerInvocation(style: AccessStyle, totalUnits: number): number {
  // CPU: ≥ 256 contiguous loads each, at most ~512 invocations (a few per SIMD lane group and core).
  return style === "cpu" ? Math.max(256, Math.ceil(totalUnits / 512)) : 1;
}

/** How row sums split a row: (row, chunk) invocations and the loop each one runs. */
export interface RowSplit {
  chunks: number;
  /** Offset of chunk k's first load: k * chunkStep. */
  chunkStep: number;
  /** Distance between consecutive loads of one chunk. */
  unitStep: number;
  /** Loads from the chunk's first to its end (clipped at the row's end). */
  span: number;
}

export function rowSplit(style: AccessStyle, rows: number, rowUnits: number): RowSplit {
  if (style === "cpu") {
    // Contiguous chunks of ≥ 64 loads; split rows only when there are too few rows to share out.
    const chunks = Math.max(1, Math.min(Math.ceil(rowUnits / 64), Math.ceil(256 / rows)));
    const chunkUnits = Math.ceil(rowUnits / chunks);
    return { chunks: Math.ceil(rowUnits / chunkUnits), chunkStep: chunkUnits, unitStep: 1, span: chunkUnits };
  }
  const chunks = Math.max(1, Math.min(rowUnits, Math.ceil(131072 / rows)));
  return { chunks, chunkStep: 1, unitStep: chunks, span: rowUnits };
}

export function rowGeometry(layout: ChannelRows) {
  const rows = layout.samples * layout.channels;
  const lanes = lanesFor(layout.rowLength);
  const rowUnits = layout.rowLength / lanes;
  return { rows, lanes, rowUnits, totalUnits: rows * rowUnits };
}
