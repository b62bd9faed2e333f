/**
 * Scaled dot-product attention, fused and flash-style (Dao et al. 2022): keys and values stream past
 * each query row in blocks while a running maximum and sum keep the softmax exact, so the Lq x Lk score
 * matrix never exists in memory. Forward saves only the per-row log-sum-exp; backward recomputes the
 * probabilities from it (dQ per query row, dK and dV per key row, after delta_i = rowsum(dO_i * O_i)).
 *
 * Layout: q [B, H, Lq, D], k and v [B, H, Lk, D], output [B, H, Lq, D]; keyMask [B, Lk] (1 keep, 0 drop).
 * The head dimension is a uniform, not compiled in: per-row accumulators live in the output (or
 * gradient) rows themselves, so one pipeline serves every D and compiles in seconds on llvmpipe, where
 * unrolled per-D register arrays took minutes. On a GPU those rows stay in L1/L2 between blocks.
 * Rows are read as vec4; a head dimension that is not a multiple of 4 is zero-padded to one first
 * (an extra copy for odd D only; Stable Diffusion's 40, 64, 80 and 160 need none).
 *
 * The op family's files (the per-op layout of ops/softmax/):
 * - `index.ts` (this file): checks, dispatch, the recorded backward;
 * - `choose.ts`: which variant runs (pure function of the adapter and the shape);
 * - `common.ts`: the kernel templates every variant fills; `cpu-rows.ts`, `gpu-tiled.ts`: the variants;
 * - `rows.ts`: row statistics and odd-D padding kernels; `checks.ts`: argument checks;
 * - `composed.ts`: the matmul -> softmax -> matmul composition (benchmark baseline, test oracle);
 * - `reference.ts`: the float64 reference; `cost.ts`: FLOPs and bytes; `bench.ts`: benchmark cases.
 */

import { needsGrad, record } from "../../runtime/autograd.ts";
import type { Gpu } from "../../runtime/device.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import {
  type AttentionKernelOptions as CheckedOptions,
  type ResolvedAttention,
  resolveAttention,
} from "./checks.ts";
import {
  ATTENTION_BACKWARDS,
  ATTENTION_VARIANTS,
  type AttentionBackward,
  type AttentionVariant,
  attentionCanUseSubgroups,
  chooseAttentionBackward,
  chooseAttentionVariant,
  SUBGROUP_LANES,
  SUBGROUP_VARIANTS,
} from "./choose.ts";
import { CHUNKED_GEMM_KERNELS, GEMM_COLUMN_VECTORS, GEMM_ROWS, GEMM_SCORE_BLOCK } from "./chunked-gemm.ts";
import {
  type AttentionKernels,
  type AttentionVariantSpec,
  MAX_ATTENTION_HEAD_DIM,
  ROWS_PER_WORKGROUP,
} from "./common.ts";
import { type AttentionShape, attentionCost } from "./cost.ts";
import { CPU_ROWS, CPU_ROWS_SPEC } from "./cpu-rows.ts";
import { CPU_SUBGROUP, CPU_SUBGROUP_SPEC } from "./cpu-subgroup.ts";
import { GPU_TILED, GPU_TILED_SPEC } from "./gpu-tiled.ts";
import { attentionHalf } from "./half.ts";
import {
  ATTENTION_RESIZE_ROWS_WGSL,
  ATTENTION_ROW_STATS_WGSL,
  releaseCopy,
  trimmed,
  withWidth,
} from "./rows.ts";

export { attentionShapeOf } from "./checks.ts";
export {
  ATTENTION_BACKWARDS,
  ATTENTION_VARIANTS,
  type AttentionAdapter,
  type AttentionBackward,
  type AttentionVariant,
  attentionCanUseSubgroups,
  chooseAttentionBackward,
  chooseAttentionVariant,
} from "./choose.ts";
export { type AttentionKernels, MAX_ATTENTION_HEAD_DIM } from "./common.ts";
export { type AttentionComposedOptions, attentionComposed } from "./composed.ts";
export { type AttentionShape, attentionCost } from "./cost.ts";
export {
  type AttentionParams,
  type AttentionReferenceOptions,
  attentionOpReference,
  attentionReference,
} from "./reference.ts";

const LOG2E = Math.LOG2E;

/** Every variant's fused kernels, exactly as launched (`cxr kernels dump attention`). */
export const ATTENTION_KERNELS: Readonly<Record<AttentionVariant, AttentionKernels>> = {
  "cpu-subgroup": CPU_SUBGROUP,
  "cpu-rows": CPU_ROWS,
  "gpu-tiled": GPU_TILED,
};

/** Each variant's kernel shapes (rows per invocation size the dispatches). */
export const ATTENTION_SPECS: Readonly<Record<AttentionVariant, AttentionVariantSpec>> = {
  "cpu-subgroup": CPU_SUBGROUP_SPEC,
  "cpu-rows": CPU_ROWS_SPEC,
  "gpu-tiled": GPU_TILED_SPEC,
};

/** The kernels every variant runs around its fused ones (row statistics; odd-D padding). */
export const ATTENTION_SHARED_KERNELS = {
  rowStats: ATTENTION_ROW_STATS_WGSL,
  resizeRows: ATTENTION_RESIZE_ROWS_WGSL,
} as const;

/**
 * Every kernel a variant can launch, by pass name (what `cxr kernels dump attention --variant V`
 * prints): its fused kernels, the shared ones, and chunked-gemm's for the subgroup variants.
 */
export const ATTENTION_PASSES: Readonly<Record<AttentionVariant, Readonly<Record<string, string>>>> = {
  "cpu-subgroup": { ...CPU_SUBGROUP, ...ATTENTION_SHARED_KERNELS, ...CHUNKED_GEMM_KERNELS },
  "cpu-rows": { ...CPU_ROWS, ...ATTENTION_SHARED_KERNELS, ...CHUNKED_GEMM_KERNELS },
  "gpu-tiled": { ...GPU_TILED, ...ATTENTION_SHARED_KERNELS },
};

export { CHUNKED_GEMM_KERNELS } from "./chunked-gemm.ts";

export interface AttentionKernelOptions extends CheckedOptions {
  /** Force a variant (tests, benchmarks); default `chooseAttentionVariant`. */
  variant?: AttentionVariant;
  /** Force the backward (tests, benchmarks); default `chooseAttentionBackward`. */
  backward?: AttentionBackward;
  /** Query rows per chunk of the chunked-scores backward (tests); default `attentionChunkRows`. */
  backwardChunkRows?: number;
}

function resolveVariant(gpu: Gpu, resolved: ResolvedAttention, forced: AttentionVariant | undefined) {
  const variant = forced ?? chooseAttentionVariant(gpu, resolved.shape);
  if (!ATTENTION_VARIANTS.includes(variant)) throw new OpError("attention", `unknown variant "${variant}"`);
  if (SUBGROUP_VARIANTS.includes(variant) && !attentionCanUseSubgroups(gpu)) {
    throw new OpError(
      "attention",
      `variant ${variant} needs the 'subgroups' feature with >= ${SUBGROUP_LANES} lanes, which this adapter lacks`,
    );
  }
  return variant;
}

function checkDispatch(gpu: Gpu, shape: AttentionShape, q: Tensor, k: Tensor): void {
  if (shape.headDim > MAX_ATTENTION_HEAD_DIM) {
    throw new OpError(
      "attention",
      `head dimension ${shape.headDim} exceeds the supported maximum ${MAX_ATTENTION_HEAD_DIM}`,
      { q, k },
    );
  }
  const maximum = gpu.limits.maxComputeWorkgroupsPerDimension;
  const rowGroups = Math.ceil(Math.max(shape.queryLength, shape.keyLength) / ROWS_PER_WORKGROUP);
  if (shape.batch * shape.heads > maximum || rowGroups > maximum) {
    throw new OpError(
      "attention",
      `batch x heads (${shape.batch * shape.heads}) and length / ${ROWS_PER_WORKGROUP} must each fit ${maximum} workgroups`,
      { q, k },
    );
  }
}

interface FusedRun extends ResolvedAttention {
  variant: AttentionVariant;
  backward: AttentionBackward;
  /** Head dimension of the tensors the kernels see: D rounded up to a multiple of 4. */
  paddedDim: number;
}

function fusedParams(run: FusedRun): Params {
  const { shape, keyMask, scale } = run;
  return new Params()
    .u32(shape.queryLength, shape.keyLength, shape.heads, keyMask ? 1 : 0, run.paddedDim / 4)
    .f32(scale * LOG2E, scale);
}

/** Forward kernel on padded q, k, v: the (padded) output and the per-row log-sum-exp. */
function fusedForward(q: Tensor, k: Tensor, v: Tensor, run: FusedRun): { output: Tensor; logSumExp: Tensor } {
  const gpu = q.gpu;
  const { batch, heads, queryLength } = run.shape;
  const output = Tensor.empty(gpu, q.shape);
  const logSumExp = Tensor.empty(gpu, [batch, heads, queryLength]);
  const cost = attentionCost(run.shape);
  launch(
    gpu,
    { name: "attention", variant: run.variant, code: ATTENTION_KERNELS[run.variant].forward },
    {
      bindings: [q, k, v, run.keyMask ?? q, output, logSumExp],
      params: fusedParams(run),
      workgroups: [
        Math.ceil(
          queryLength / (ATTENTION_SPECS[run.variant].forward.rowsPerInvocation * ROWS_PER_WORKGROUP),
        ),
        batch * heads,
      ],
      flops: cost.forwardFlops,
      bytes: cost.forwardBytes,
    },
  );
  return { output, logSumExp };
}

/** Backward step 1 (rows.ts): rowStats[i] = (lse_i, delta_i = rowsum(dO_i * O_i)), [rows, 2]. */
function rowStatistics(output: Tensor, gradOutput: Tensor, logSumExp: Tensor, rows: number, headDim: number) {
  const rowStats = Tensor.empty(output.gpu, [rows, 2]);
  launch(
    output.gpu,
    { name: "attentionBackward", variant: "row-stats", code: ATTENTION_ROW_STATS_WGSL },
    {
      bindings: [output, gradOutput, logSumExp, rowStats],
      params: new Params().u32(rows, headDim),
      workgroups: grid(rows, 64),
      flops: 2 * rows * headDim,
      bytes: 4 * rows * (2 * headDim + 3),
    },
  );
  return rowStats;
}

/** What every backward gets: padded q, k, v and output gradient, the (unpadded) output and its gradient, the saved lse. */
interface BackwardInputs {
  padded: { q: Tensor; k: Tensor; v: Tensor; gradOutput: Tensor };
  output: Tensor;
  gradOutput: Tensor;
  logSumExp: Tensor;
}

/** The backwards' first step, row statistics (from the unpadded tensors), and their shared bindings. */
function backwardStart({ padded, output, gradOutput, logSumExp }: BackwardInputs, run: FusedRun) {
  const { batch, heads, queryLength, headDim } = run.shape;
  return {
    ...padded,
    gpu: padded.q.gpu,
    rowStats: rowStatistics(output, gradOutput, logSumExp, batch * heads * queryLength, headDim),
    mask: run.keyMask ?? padded.q, // bound but never read when useMask = 0 (layout "auto" needs a buffer)
  };
}

/**
 * Backward kernels: row statistics from the unpadded output and gradient, then dQ and dK/dV from the
 * padded q, k, v and output gradient. Returns padded gradients.
 */
function fusedBackward(inputs: BackwardInputs, run: FusedRun): [Tensor, Tensor, Tensor] {
  const { q, k, v, gradOutput, gpu, rowStats, mask } = backwardStart(inputs, run);
  const { batch, heads, queryLength, keyLength, headDim } = run.shape;
  const queryRows = batch * heads * queryLength;
  const params = fusedParams(run);
  const pairs = batch * heads * queryLength * keyLength;
  const gradQuery = Tensor.empty(gpu, q.shape);
  launch(
    gpu,
    {
      name: "attentionBackward",
      variant: `${run.variant}:dQ`,
      code: ATTENTION_KERNELS[run.variant].backwardQuery,
    },
    {
      bindings: [q, k, v, mask, gradOutput, rowStats, gradQuery],
      params,
      workgroups: [Math.ceil(queryLength / ROWS_PER_WORKGROUP), batch * heads],
      flops: pairs * (6 * headDim + 6),
      bytes: 4 * (3 * q.size + 2 * k.size) + 8 * queryRows,
    },
  );
  const gradKey = Tensor.empty(gpu, k.shape);
  const gradValue = Tensor.empty(gpu, v.shape);
  launch(
    gpu,
    {
      name: "attentionBackward",
      variant: `${run.variant}:dKdV`,
      code: ATTENTION_KERNELS[run.variant].backwardKeyValue,
    },
    {
      bindings: [q, k, v, mask, gradOutput, rowStats, gradKey, gradValue],
      params,
      workgroups: [Math.ceil(keyLength / ROWS_PER_WORKGROUP), batch * heads],
      flops: pairs * (8 * headDim + 6),
      bytes: 4 * (2 * q.size + 4 * k.size) + 8 * queryRows,
    },
  );
  rowStats.release();
  return [gradQuery, gradKey, gradValue];
}

/**
 * Each chunked backward's scratch: bytes per query-key pair of a chunk, those of its largest storage
 * binding, the multiple its rows per key are rounded up to (a whole block of the kernel
 * that stores them), the budget that sizes its chunks and the fewest rows a chunk takes.
 */
const SCRATCH = {
  // (P, dS) as vec2, key-major; the dK/dV kernel reads a key's rows two per vec4 in blocks of 16.
  "chunked-scores": {
    bytesPerPair: 8,
    bindingBytesPerPair: 8,
    alignment: Math.max(...Object.values(ATTENTION_SPECS).map((spec) => spec.backward.block)),
    budget: 16 * 2 ** 20,
    minimumRows: ROWS_PER_WORKGROUP,
  },
  // P and dS query-major in one binding, dS key-major in another (chunked-gemm.ts); blocks of 32 rows.
  "chunked-gemm": {
    bytesPerPair: 12,
    bindingBytesPerPair: 8,
    alignment: GEMM_SCORE_BLOCK,
    budget: 24 * 2 ** 20,
    // The dQ product gives a workgroup 256 query rows: fewer leave lanes idle (B1 H8 L2048 D64, wall
    // ms: chunks of 128 rows 894, 256 740, 512 737).
    minimumRows: GEMM_ROWS * ROWS_PER_WORKGROUP,
  },
} as const;
type ChunkedBackward = keyof typeof SCRATCH;
const scoreRowsOf = (chunkRows: number, backward: ChunkedBackward) =>
  Math.ceil(chunkRows / SCRATCH[backward].alignment) * SCRATCH[backward].alignment;

/** Bytes the chunked-scores backward may hold for (P, dS) of one chunk, unless a chunk size is forced. */
export const ATTENTION_SCRATCH_BUDGET_BYTES = SCRATCH["chunked-scores"].budget;

/**
 * Query rows per chunk of a chunked backward: as many as fit its scratch budget, at least its minimum
 * (a workgroup's worth; so the scratch grows linearly with Lk beyond the budget), at most Lq, and
 * spread evenly over the chunks that takes; null when a binding would exceed the adapter's largest
 * storage binding (then the recomputing backward runs).
 */
export function attentionChunkRows(
  gpu: Gpu,
  shape: AttentionShape,
  forced?: number,
  backward: ChunkedBackward = "chunked-scores",
): number | null {
  const { batch, heads, queryLength, keyLength } = shape;
  const scratch = SCRATCH[backward];
  const bytesPerRow = scratch.bytesPerPair * batch * heads * keyLength;
  const fit = Math.floor(scratch.budget / bytesPerRow);
  const rows = forced ?? Math.min(queryLength, Math.max(scratch.minimumRows, fit));
  if (!Number.isInteger(rows) || rows < 1) {
    throw new OpError("attention", `backwardChunkRows must be a positive integer, got ${forced}`);
  }
  const chunks = Math.ceil(queryLength / rows);
  const chunk = forced === undefined ? Math.ceil(queryLength / chunks) : Math.min(rows, queryLength);
  const bindingBytes = scratch.bindingBytesPerPair * batch * heads * keyLength * scoreRowsOf(chunk, backward);
  return bindingBytes <= gpu.limits.maxStorageBufferBindingSize ? chunk : null;
}

/**
 * The chunked-scores backward (chunked-scores.ts): per chunk of query rows, dQ plus (P, dS) into the
 * scratch, then dK and dV from it. Same inputs and padded results as `fusedBackward`.
 */
function chunkedBackward(inputs: BackwardInputs, run: FusedRun, chunkRows: number): [Tensor, Tensor, Tensor] {
  const { q, k, v, gradOutput, gpu, rowStats, mask } = backwardStart(inputs, run);
  const { batch, heads, queryLength, keyLength, headDim } = run.shape;
  const kernels = ATTENTION_KERNELS[run.variant];
  // Key-major: (P, dS) of key j for the chunk's rows at [head, j, 0 .. scoreRows), rows padded to a
  // whole backward block so the dK/dV kernel reads two rows per vec4 and never past the end.
  const scoreRows = scoreRowsOf(chunkRows, "chunked-scores");
  const scores = Tensor.empty(gpu, [batch * heads, keyLength, scoreRows, 2]);
  const gradQuery = Tensor.empty(gpu, q.shape);
  const gradKey = Tensor.empty(gpu, k.shape);
  const gradValue = Tensor.empty(gpu, v.shape);
  for (let chunkStart = 0; chunkStart < queryLength; chunkStart += chunkRows) {
    const rows = Math.min(chunkRows, queryLength - chunkStart);
    const pairs = batch * heads * rows * keyLength;
    const params = fusedParams(run).u32(chunkStart, chunkRows, scoreRows);
    launch(
      gpu,
      { name: "attentionBackward", variant: `${run.variant}:dQ+scores`, code: kernels.backwardQueryChunk },
      {
        bindings: [q, k, v, mask, gradOutput, rowStats, gradQuery, scores],
        params,
        workgroups: [
          Math.ceil(rows / (ATTENTION_SPECS[run.variant].backward.rowsPerInvocation * ROWS_PER_WORKGROUP)),
          batch * heads,
        ],
        flops: pairs * (6 * headDim + 6),
        bytes: 4 * (3 * q.size * (rows / queryLength) + 2 * k.size) + 8 * pairs,
      },
    );
    launch(
      gpu,
      {
        name: "attentionBackward",
        variant: `${run.variant}:dKdV-from-scores`,
        code: kernels.backwardKeyValueChunk,
      },
      {
        bindings: [q, mask, gradOutput, scores, gradKey, gradValue],
        params,
        workgroups: [
          Math.ceil(
            keyLength / (ATTENTION_SPECS[run.variant].backward.rowsPerInvocation * ROWS_PER_WORKGROUP),
          ),
          batch * heads,
        ],
        flops: pairs * 4 * headDim,
        bytes: 4 * (2 * q.size * (rows / queryLength) + 4 * k.size) + 8 * pairs,
      },
    );
  }
  rowStats.release();
  scores.release();
  return [gradQuery, gradKey, gradValue];
}

/** Where a chunked-gemm product (chunked-gemm.ts) reads its plane and rows and writes its output. */
interface ProductLayout {
  inner: number;
  planeStride: number;
  planeHeadRows: number;
  rowsHeadRows: number;
  rowsOffset: number;
  outHeadRows: number;
  outOffset: number;
  outRows: number;
  accumulate: boolean;
  /** vec4 from the first product's plane to the second's (the pair kernel). */
  planeJobStride: number;
}

/**
 * Launches chunked-gemm's product for one gradient (`jobs` = [[rows, out]]) or its pair kernel for two
 * sharing a layout (planes `planeJobStride` apart): out (+)= plane x rows.
 */
function gemmProduct(
  gpu: Gpu,
  label: string,
  plane: Tensor,
  jobs: [Tensor, Tensor][],
  heads: number,
  vectors: number,
  layout: ProductLayout,
): void {
  const D = 4 * vectors;
  const columnGroups = Math.ceil(vectors / GEMM_COLUMN_VECTORS);
  const perJob = heads * layout.inner * layout.outRows;
  launch(
    gpu,
    {
      name: "attentionBackward",
      variant: label,
      code: jobs.length === 1 ? CHUNKED_GEMM_KERNELS.gemmProduct : CHUNKED_GEMM_KERNELS.gemmProductPair,
    },
    {
      bindings: [plane, ...jobs.flat()],
      params: new Params().u32(
        vectors,
        layout.inner,
        layout.planeStride,
        layout.planeHeadRows,
        layout.rowsHeadRows,
        layout.rowsOffset,
        layout.outHeadRows,
        layout.outOffset,
        layout.outRows,
        layout.accumulate ? 1 : 0,
        columnGroups,
        layout.planeJobStride,
      ),
      workgroups: [
        Math.ceil(layout.outRows / (GEMM_ROWS * ROWS_PER_WORKGROUP)),
        heads,
        columnGroups * jobs.length,
      ],
      flops: jobs.length * 2 * perJob * D,
      bytes:
        jobs.length *
        4 *
        (perJob + heads * (layout.inner + (layout.accumulate ? 2 : 1) * layout.outRows) * D),
    },
  );
}

/**
 * The chunked-gemm backward (chunked-gemm.ts; subgroup adapters): per chunk of query rows, P and dS
 * into three planes, then dQ and (dV, dK) as register-blocked products over them. Same inputs and
 * padded results as `fusedBackward`.
 */
function chunkedGemmBackward(
  inputs: BackwardInputs,
  run: FusedRun,
  chunkRows: number,
): [Tensor, Tensor, Tensor] {
  const { q, k, v, gradOutput, gpu, rowStats, mask } = backwardStart(inputs, run);
  const { batch, heads, queryLength, keyLength } = run.shape;
  const headCount = batch * heads;
  const scoreRows = scoreRowsOf(chunkRows, "chunked-gemm");
  const keyVectors = Math.ceil(keyLength / 4);
  const planeVectors = headCount * scoreRows * keyVectors;
  // P and dS query-major, one after the other; dS key-major.
  const byQuery = Tensor.empty(gpu, [2, headCount, scoreRows, 4 * keyVectors]);
  const byKey = Tensor.empty(gpu, [headCount, keyLength, scoreRows]);
  const gradQuery = Tensor.empty(gpu, q.shape);
  const gradKey = Tensor.empty(gpu, k.shape);
  const gradValue = Tensor.empty(gpu, v.shape);
  const vectors = run.paddedDim / 4;
  for (let chunkStart = 0; chunkStart < queryLength; chunkStart += chunkRows) {
    const rows = Math.min(chunkRows, queryLength - chunkStart);
    const pairs = headCount * rows * keyLength;
    launch(
      gpu,
      {
        name: "attentionBackward",
        variant: `${run.variant}:gemm-scores`,
        code: CHUNKED_GEMM_KERNELS.gemmScores,
      },
      {
        bindings: [q, k, v, mask, gradOutput, rowStats, byQuery, byKey],
        params: fusedParams(run).u32(chunkStart, chunkRows, scoreRows, planeVectors),
        workgroups: [Math.ceil(keyLength / (GEMM_ROWS * ROWS_PER_WORKGROUP)), headCount],
        flops: pairs * (4 * run.paddedDim + 6),
        bytes: 4 * headCount * (2 * rows * run.paddedDim + 2 * keyLength * run.paddedDim) + 12 * pairs,
      },
    );
    gemmProduct(gpu, `${run.variant}:gemm-dQ`, byKey, [[k, gradQuery]], headCount, vectors, {
      inner: keyLength,
      planeStride: scoreRows / 4,
      planeHeadRows: keyLength,
      rowsHeadRows: keyLength,
      rowsOffset: 0,
      outHeadRows: queryLength,
      outOffset: chunkStart,
      outRows: rows,
      accumulate: false,
      planeJobStride: 0,
    });
    gemmProduct(
      gpu,
      `${run.variant}:gemm-dV+dK`,
      byQuery,
      [
        [gradOutput, gradValue],
        [q, gradKey],
      ],
      headCount,
      vectors,
      {
        inner: rows,
        planeStride: keyVectors,
        planeHeadRows: scoreRows,
        rowsHeadRows: queryLength,
        rowsOffset: chunkStart,
        outHeadRows: keyLength,
        outOffset: 0,
        outRows: keyLength,
        accumulate: chunkStart > 0,
        planeJobStride: planeVectors,
      },
    );
  }
  rowStats.release();
  byQuery.release();
  byKey.release();
  return [gradQuery, gradKey, gradValue];
}

/**
 * softmax(scale * q k^T, masked over keys) v, fused. q [B, H, Lq, D], k and v [B, H, Lk, D];
 * returns [B, H, Lq, D]. Records its flash-style backward when q, k or v needs a gradient.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionKernelOptions = {}): Tensor {
  if (q.dtype === "f16") return attentionHalf(q, k, v, options); // half.ts: inference only
  const resolved = resolveAttention("attention", q, k, v, options);
  const gpu = q.gpu;
  checkDispatch(gpu, resolved.shape, q, k);
  const { headDim } = resolved.shape;
  const variant = resolveVariant(gpu, resolved, options.variant);
  const run: FusedRun = {
    ...resolved,
    variant,
    backward: options.backward ?? chooseAttentionBackward(gpu, resolved.shape, variant),
    paddedDim: Math.ceil(headDim / 4) * 4,
  };
  if (!ATTENTION_BACKWARDS.includes(run.backward)) {
    throw new OpError("attention", `unknown backward "${run.backward}"`);
  }
  if (run.backward === "chunked-gemm" && !SUBGROUP_VARIANTS.includes(run.variant)) {
    throw new OpError(
      "attention",
      `backward chunked-gemm needs a subgroup variant (${SUBGROUP_VARIANTS.join(", ")}), got ${run.variant}`,
    );
  }
  const chunkRows =
    run.backward === "recompute"
      ? null
      : attentionChunkRows(gpu, run.shape, options.backwardChunkRows, run.backward);
  const [qp, kp, vp] = [q, k, v].map((x) => withWidth(x, run.paddedDim));
  const forward = fusedForward(qp, kp, vp, run);
  const output = trimmed(forward.output, headDim);
  releaseCopy(qp, q);
  releaseCopy(kp, k);
  releaseCopy(vp, v);
  if (!needsGrad(q, k, v)) {
    forward.logSumExp.release();
    return output;
  }
  const backwardFn = ([gradOutput]: (Tensor | null)[]) => {
    const padded = {
      q: withWidth(q, run.paddedDim),
      k: withWidth(k, run.paddedDim),
      v: withWidth(v, run.paddedDim),
      gradOutput: withWidth(gradOutput!, run.paddedDim),
    };
    const inputs = { padded, output, gradOutput: gradOutput!, logSumExp: forward.logSumExp };
    const grads =
      chunkRows === null
        ? fusedBackward(inputs, run)
        : run.backward === "chunked-gemm"
          ? chunkedGemmBackward(inputs, run, chunkRows)
          : chunkedBackward(inputs, run, chunkRows);
    releaseCopy(padded.q, q);
    releaseCopy(padded.k, k);
    releaseCopy(padded.v, v);
    releaseCopy(padded.gradOutput, gradOutput!);
    return grads.map((grad) => trimmed(grad, headDim));
  };
  record("attention", [q, k, v], [output], backwardFn, [forward.logSumExp]);
  return output;
}
