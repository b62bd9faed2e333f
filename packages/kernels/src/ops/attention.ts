/**
 * Scaled dot-product attention, fused and flash-style (Dao et al. 2022): keys and values stream past
 * each query row in blocks while a running maximum and sum keep the softmax exact, so the Lq x Lk score
 * matrix never exists in memory. Forward saves only the per-row log-sum-exp; backward recomputes the
 * probabilities from it (dQ per query row, dK and dV per key row, after delta_i = rowsum(dO_i * O_i)).
 *
 * Layout: q [B, H, Lq, D], k and v [B, H, Lk, D], output [B, H, Lq, D]; keyMask [B, Lk] (1 keep, 0 drop).
 *
 * Every kernel gives each invocation one row (a query row; a key row for dK/dV) and streams the other
 * side in blocks of BLOCK rows that all invocations of a workgroup share. The variants differ only in
 * how a shared block reaches the invocations:
 * - "cpu-rows" (llvmpipe): no workgroup memory. Each SIMD lane loads a different row of the block and
 *   `subgroupBroadcast` hands it to the others: llvmpipe turns a load of one address by every lane into
 *   one scalar load per lane, while a broadcast is a register shuffle. Needs subgroups of >= 8 lanes
 *   (llvmpipe has them); a CPU adapter without them runs "gpu-tiled", which is correct anywhere.
 * - "gpu-tiled": the workgroup stages the block in workgroup memory, then every row reads it there.
 * The head dimension is a uniform, not compiled in: per-row accumulators live in the output (or
 * gradient) rows themselves, so one pipeline serves every D and compiles in seconds on llvmpipe, where
 * unrolled per-D register arrays took minutes. On a GPU those rows stay in L1/L2 between blocks.
 * Rows are read as vec4; a head dimension that is not a multiple of 4 is zero-padded to one first
 * (an extra copy for odd D only; Stable Diffusion's 40, 64, 80 and 160 need none).
 *
 * `attentionComposed` is the unfused matmul -> softmax -> matmul path (benchmark baseline, test oracle).
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import type { Gpu } from "../runtime/device.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { OpError, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";
import { type MatmulVariant, matmul } from "./matmul/index.ts";
import { type SoftmaxVariant, softmax } from "./softmax/index.ts";

export type AttentionVariant = "cpu-rows" | "gpu-tiled";
export const ATTENTION_VARIANTS: readonly AttentionVariant[] = ["cpu-rows", "gpu-tiled"];

/** Largest head dimension: workgroup tiles are sized for it (SD uses 40, 64, 80 and 160). */
export const MAX_ATTENTION_HEAD_DIM = 256;

export interface AttentionKernelOptions {
  /** Multiplies q.k before the softmax. Default 1/sqrt(D). */
  scale?: number;
  /** [B, Lk]: 1 keeps a key, 0 drops it. A query whose keys are all dropped outputs zeros. */
  keyMask?: Tensor;
  /** Force a variant (tests, benchmarks); default `chooseAttentionVariant`. */
  variant?: AttentionVariant;
}

export interface AttentionShape {
  batch: number;
  heads: number;
  queryLength: number;
  keyLength: number;
  headDim: number;
}

/** Rows (queries, or keys for dK/dV) per workgroup: one per invocation. */
const ROWS_PER_WORKGROUP = 64;
/** Lanes that share one subgroup load; llvmpipe's subgroups are 8 lanes (256-bit vectors). */
const SUBGROUP_LANES = 8;
/**
 * Shared rows per block: 16 on the CPU variant (two subgroup loads; more only grows the shader), 8 in
 * the tiled variant so two tiles at the largest head dimension fit WebGPU's guaranteed 16 KiB.
 */
const BLOCK_ROWS: Record<AttentionVariant, number> = { "cpu-rows": 16, "gpu-tiled": 8 };
const LOG2E = Math.LOG2E;

// ---------------------------------------------------------------------------------------------------
// WGSL. Head rows are arrays of `Row` (vec4), `vectors` = D / 4 of them per row. Blocks are unrolled by
// generating the per-row lines below (WGSL has no macros, and private arrays indexed in loops compile
// very slowly on llvmpipe).

interface SharedBlock {
  /** Module-scope declarations (workgroup tiles). */
  declarations: string;
  /** Statements at the top of each block (row offsets, tile staging). */
  stage: string;
  /** Statements at the top of a loop over `c` that reads `buffers` (per-lane loads to broadcast). */
  loadsFor(buffers: string[]): string;
  /** Expression: vector `c` of shared row `t` of `buffer`. */
  fetch(buffer: string, t: number): string;
  /** Statements at the end of each block. */
  finish: string;
}

/**
 * Shared rows `rowBase + start + t` (t < block, clamped to `count - 1`) of `buffers`, as the variant
 * delivers them. Rows past `count` repeat the last one; callers give them zero weight.
 */
function sharedBlock(
  variant: AttentionVariant,
  buffers: string[],
  rowBase: string,
  count: string,
  block: number,
): SharedBlock {
  if (variant === "cpu-rows") {
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
        used
          .flatMap((buffer) => groups.map((g) => `let ${buffer}Own${g} = ${buffer}[own${g} + c];`))
          .join(" "),
      fetch: (buffer, t) =>
        `subgroupBroadcast(${buffer}Own${Math.floor(t / SUBGROUP_LANES)}, ${t % SUBGROUP_LANES}u)`,
      finish: "",
    };
  }
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

const ATTENTION_COMMON_WGSL = `
struct Params {
  queryLength: u32, keyLength: u32, heads: u32, useMask: u32, vectors: u32, scaleLog2: f32, scale: f32,
}
alias Row = vec4<f32>;
const MAX_VECTORS: u32 = {{maxVectors}}u;
const ROWS: u32 = {{rows}}u;
// Below every real score; finite, because WGSL lets implementations assume finite math.
const NEG_BIG: f32 = -3.0e38;
const LN2: f32 = 0.6931471805599453;
const LOG2E: f32 = 1.4426950408889634;
fn total(x: Row) -> f32 { return x.x + x.y + x.z + x.w; }
// Non-short-circuit & and |: both sides are cheap, and a short-circuit would be a branch per key.
// Without a mask, keyMask is some other buffer; an out-of-range read there is clamped by WebGPU.
fn keyKept(batch: u32, j: u32) -> bool {
  return (params.useMask == 0u) | (keyMask[batch * params.keyLength + j] != 0.0);
}
fn keyInBlock(start: u32, t: u32, batch: u32) -> bool {
  let j = start + t;
  return (j < params.keyLength) & keyKept(batch, min(j, params.keyLength - 1u));
}
{{sharedDeclarations}}`;

/** Entry point header: one row per invocation; workgroup (x: row block, y: batch * head). */
const ENTRY_WGSL = `
@compute @workgroup_size(ROWS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32{{laneBuiltin}}) {
  let head = wid.y;
  let batch = head / params.heads;
  let vectors = params.vectors;
  let row = wid.x * ROWS + lane;`;

/**
 * Forward. Per block: scores s_t = q . k_t (log2 units), block max, rescale of the running sum and
 * of the accumulator (the output row), then accumulator += p_t v_t. Rows past the end compute the
 * last row again (keeping control flow uniform for broadcasts and barriers) but never store.
 */
export const ATTENTION_FORWARD_WGSL = `{{enable}}
@group(0) @binding(0) var<storage, read> query: array<Row>;
@group(0) @binding(1) var<storage, read> key: array<Row>;
@group(0) @binding(2) var<storage, read> value: array<Row>;
@group(0) @binding(3) var<storage, read> keyMask: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<Row>;
@group(0) @binding(5) var<storage, read_write> logSumExp: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;
${ATTENTION_COMMON_WGSL}
${ENTRY_WGSL}
  let inRange = row < params.queryLength;
  let queryRow = head * params.queryLength + min(row, params.queryLength - 1u);
  let queryBase = queryRow * vectors;
  let keyRow0 = head * params.keyLength;
  if (inRange) { for (var c = 0u; c < vectors; c++) { output[queryBase + c] = Row(); } }
  var runningMax = NEG_BIG;
  var runningSum = 0.0;
  for (var start = 0u; start < params.keyLength; start += {{block}}u) {
    {{stage}}
    {{declareScores}}
    for (var c = 0u; c < vectors; c++) {
      {{loadKeys}}
      let q = query[queryBase + c];
      {{accumulateScores}}
    }
    {{probabilities}}
    let blockMax = max(runningMax, {{blockMax}});
    let correction = exp2(runningMax - blockMax);
    {{weights}}
    runningSum = runningSum * correction + {{weightSum}};
    for (var c = 0u; c < vectors; c++) {
      {{loadValues}}
      let accumulated = output[queryBase + c] * correction + {{weightedValues}};
      if (inRange) { output[queryBase + c] = accumulated; }
    }
    runningMax = blockMax;
    {{finish}}
  }
  if (!inRange) { return; }
  // A row whose keys are all masked has runningSum 0: its output stays zeros and its log-sum-exp is
  // stored as 0 (backward masks every one of its probabilities to 0 anyway).
  let inverseSum = select(0.0, 1.0 / runningSum, runningSum > 0.0);
  for (var c = 0u; c < vectors; c++) { output[queryBase + c] = output[queryBase + c] * inverseSum; }
  logSumExp[queryRow] = select(0.0, (runningMax + log2(runningSum)) * LN2, runningSum > 0.0);
}`;

/**
 * Backward step 1, shared by both variants: delta_i = rowsum(dO_i * O_i), stored next to the row's
 * log-sum-exp as rowStats[i] = (lse_i, delta_i) so the next kernels bind one buffer for both.
 */
export const ATTENTION_ROW_STATS_WGSL = `
@group(0) @binding(0) var<storage, read> output: array<f32>;
@group(0) @binding(1) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(2) var<storage, read> logSumExp: array<f32>;
@group(0) @binding(3) var<storage, read_write> rowStats: array<vec2<f32>>;
struct Params { rows: u32, headDim: u32 }
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let row = linearIndex(gid, groups, 64u);
  if (row >= params.rows) { return; }
  var delta = 0.0;
  for (var d = 0u; d < params.headDim; d++) {
    let index = row * params.headDim + d;
    delta += gradOutput[index] * output[index];
  }
  rowStats[row] = vec2<f32>(logSumExp[row], delta);
}`;

/**
 * dQ, per query row: p_t = exp(s_t - lse), dS_t = scale * p_t (dO . v_t - delta), dQ += dS_t k_t.
 */
export const ATTENTION_BACKWARD_QUERY_WGSL = `{{enable}}
@group(0) @binding(0) var<storage, read> query: array<Row>;
@group(0) @binding(1) var<storage, read> key: array<Row>;
@group(0) @binding(2) var<storage, read> value: array<Row>;
@group(0) @binding(3) var<storage, read> keyMask: array<f32>;
@group(0) @binding(4) var<storage, read> gradOutput: array<Row>;
@group(0) @binding(5) var<storage, read> rowStats: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> gradQuery: array<Row>;
@group(0) @binding(7) var<uniform> params: Params;
${ATTENTION_COMMON_WGSL}
${ENTRY_WGSL}
  let inRange = row < params.queryLength;
  let queryRow = head * params.queryLength + min(row, params.queryLength - 1u);
  let queryBase = queryRow * vectors;
  let keyRow0 = head * params.keyLength;
  let stats = rowStats[queryRow];
  let logSumExp2 = stats.x * LOG2E;
  let delta = stats.y;
  if (inRange) { for (var c = 0u; c < vectors; c++) { gradQuery[queryBase + c] = Row(); } }
  for (var start = 0u; start < params.keyLength; start += {{block}}u) {
    {{stage}}
    {{declareScores}}
    {{declareGradProbabilities}}
    for (var c = 0u; c < vectors; c++) {
      {{loadKeysValues}}
      let q = query[queryBase + c];
      let dO = gradOutput[queryBase + c];
      {{accumulateScores}}
      {{accumulateGradProbabilities}}
    }
    {{gradScores}}
    for (var c = 0u; c < vectors; c++) {
      {{loadKeys}}
      let accumulated = gradQuery[queryBase + c] + {{weightedKeys}};
      if (inRange) { gradQuery[queryBase + c] = accumulated; }
    }
    {{finish}}
  }
}`;

/**
 * dK and dV, per key row j, over all queries i: dV_j += p_ij dO_i, dK_j += dS_ij q_i. A dropped key
 * gets no probability from any query, hence zero dK and dV.
 */
export const ATTENTION_BACKWARD_KEY_VALUE_WGSL = `{{enable}}
@group(0) @binding(0) var<storage, read> query: array<Row>;
@group(0) @binding(1) var<storage, read> key: array<Row>;
@group(0) @binding(2) var<storage, read> value: array<Row>;
@group(0) @binding(3) var<storage, read> keyMask: array<f32>;
@group(0) @binding(4) var<storage, read> gradOutput: array<Row>;
@group(0) @binding(5) var<storage, read> rowStats: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> gradKey: array<Row>;
@group(0) @binding(7) var<storage, read_write> gradValue: array<Row>;
@group(0) @binding(8) var<uniform> params: Params;
${ATTENTION_COMMON_WGSL}
${ENTRY_WGSL}
  let inRange = row < params.keyLength;
  let keyIndex = min(row, params.keyLength - 1u);
  let keyBase = (head * params.keyLength + keyIndex) * vectors;
  let queryRow0 = head * params.queryLength;
  let kept = keyKept(batch, keyIndex);
  if (inRange) {
    for (var c = 0u; c < vectors; c++) { gradKey[keyBase + c] = Row(); gradValue[keyBase + c] = Row(); }
  }
  for (var start = 0u; start < params.queryLength; start += {{block}}u) {
    {{stage}}
    {{declareScores}}
    {{declareGradProbabilities}}
    for (var c = 0u; c < vectors; c++) {
      {{loadQueriesGradOutputs}}
      let k = key[keyBase + c];
      let v = value[keyBase + c];
      {{accumulateScores}}
      {{accumulateGradProbabilities}}
    }
    {{gradScores}}
    for (var c = 0u; c < vectors; c++) {
      {{loadQueriesGradOutputs}}
      let accumulatedKey = gradKey[keyBase + c] + {{weightedQueries}};
      let accumulatedValue = gradValue[keyBase + c] + {{weightedGradOutputs}};
      if (inRange) {
        gradKey[keyBase + c] = accumulatedKey;
        gradValue[keyBase + c] = accumulatedValue;
      }
    }
    {{finish}}
  }
}`;

export type AttentionKernel = "forward" | "backwardQuery" | "backwardKeyValue";

const lines = (block: number, line: (t: number) => string, separator = "\n    ") =>
  Array.from({ length: block }, (_, t) => line(t)).join(separator);
const sumOf = (block: number, term: (t: number) => string) =>
  Array.from({ length: block }, (_, t) => term(t)).join(" + ");

/** Fills a kernel template's generated (unrolled) blocks for one variant. */
function kernelBlocks(kernel: AttentionKernel, variant: AttentionVariant): Record<string, string> {
  const block = BLOCK_ROWS[variant];
  const max = Array.from({ length: block }, (_, t) => `score${t}`).reduce((a, b) => `max(${a}, ${b})`);
  const declareScores = lines(block, (t) => `var s${t} = Row();`, " ");
  const declareGradProbabilities = lines(block, (t) => `var g${t} = Row();`, " ");
  if (kernel === "forward") {
    const shared = sharedBlock(variant, ["key", "value"], "keyRow0", "params.keyLength", block);
    return {
      sharedDeclarations: shared.declarations,
      stage: shared.stage,
      declareScores,
      loadKeys: shared.loadsFor(["key"]),
      accumulateScores: lines(block, (t) => `s${t} += q * ${shared.fetch("key", t)};`, " "),
      probabilities: lines(
        block,
        (t) =>
          `let score${t} = select(NEG_BIG, total(s${t}) * params.scaleLog2, keyInBlock(start, ${t}u, batch));`,
      ),
      blockMax: max,
      weights: lines(
        block,
        (t) => `let p${t} = select(0.0, exp2(score${t} - blockMax), score${t} > NEG_BIG);`,
      ),
      weightSum: sumOf(block, (t) => `p${t}`),
      loadValues: shared.loadsFor(["value"]),
      weightedValues: sumOf(block, (t) => `p${t} * ${shared.fetch("value", t)}`),
      finish: shared.finish,
    };
  }
  if (kernel === "backwardQuery") {
    const shared = sharedBlock(variant, ["key", "value"], "keyRow0", "params.keyLength", block);
    return {
      sharedDeclarations: shared.declarations,
      stage: shared.stage,
      declareScores,
      declareGradProbabilities,
      loadKeysValues: shared.loadsFor(["key", "value"]),
      accumulateScores: lines(block, (t) => `s${t} += q * ${shared.fetch("key", t)};`, " "),
      accumulateGradProbabilities: lines(block, (t) => `g${t} += dO * ${shared.fetch("value", t)};`, " "),
      gradScores: lines(
        block,
        (t) =>
          `let dS${t} = select(0.0, params.scale * exp2(total(s${t}) * params.scaleLog2 - logSumExp2) * (total(g${t}) - delta), keyInBlock(start, ${t}u, batch));`,
      ),
      loadKeys: shared.loadsFor(["key"]),
      weightedKeys: sumOf(block, (t) => `dS${t} * ${shared.fetch("key", t)}`),
      finish: shared.finish,
    };
  }
  const shared = sharedBlock(variant, ["query", "gradOutput"], "queryRow0", "params.queryLength", block);
  return {
    sharedDeclarations: shared.declarations,
    stage: `${shared.stage}
    ${lines(block, (t) => `let stats${t} = rowStats[queryRow0 + min(start + ${t}u, params.queryLength - 1u)];`)}`,
    declareScores,
    declareGradProbabilities,
    loadQueriesGradOutputs: shared.loadsFor(["query", "gradOutput"]),
    accumulateScores: lines(block, (t) => `s${t} += k * ${shared.fetch("query", t)};`, " "),
    accumulateGradProbabilities: lines(block, (t) => `g${t} += v * ${shared.fetch("gradOutput", t)};`, " "),
    gradScores: lines(
      block,
      (t) =>
        `let p${t} = select(0.0, exp2(total(s${t}) * params.scaleLog2 - stats${t}.x * LOG2E), kept & (start + ${t}u < params.queryLength));
    let dS${t} = params.scale * p${t} * (total(g${t}) - stats${t}.y);`,
    ),
    weightedQueries: sumOf(block, (t) => `dS${t} * ${shared.fetch("query", t)}`),
    weightedGradOutputs: sumOf(block, (t) => `p${t} * ${shared.fetch("gradOutput", t)}`),
    finish: shared.finish,
  };
}

const TEMPLATES: Record<AttentionKernel, string> = {
  forward: ATTENTION_FORWARD_WGSL,
  backwardQuery: ATTENTION_BACKWARD_QUERY_WGSL,
  backwardKeyValue: ATTENTION_BACKWARD_KEY_VALUE_WGSL,
};

const sourceCache = new Map<string, string>();

/** The WGSL of one attention kernel for one variant (cached: building it is string work). */
export function attentionSource(kernel: AttentionKernel, variant: AttentionVariant): string {
  const cacheKey = `${kernel}/${variant}`;
  let code = sourceCache.get(cacheKey);
  if (!code) {
    const subgroups = variant === "cpu-rows";
    code = wgsl(TEMPLATES[kernel], {
      ...kernelBlocks(kernel, variant),
      enable: subgroups ? "enable subgroups;" : "",
      laneBuiltin: subgroups ? ", @builtin(subgroup_invocation_id) subgroupLane: u32" : "",
      maxVectors: MAX_ATTENTION_HEAD_DIM / 4,
      rows: ROWS_PER_WORKGROUP,
      block: BLOCK_ROWS[variant],
    });
    sourceCache.set(cacheKey, code);
  }
  return code;
}

/** Copies rows of `fromWidth` floats into rows of `toWidth`, zero-filling (pads or trims odd D). */
export const ATTENTION_RESIZE_ROWS_WGSL = `
@group(0) @binding(0) var<storage, read> source: array<f32>;
@group(0) @binding(1) var<storage, read_write> destination: array<f32>;
struct Params { size: u32, fromWidth: u32, toWidth: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let row = index / params.toWidth;
  let column = index % params.toWidth;
  let sourceIndex = row * params.fromWidth + min(column, params.fromWidth - 1u);
  destination[index] = select(0.0, source[sourceIndex], column < params.fromWidth);
}`;

/** `x` [..., width] as [..., newWidth]: zero-padded or trimmed. */
function resizeRows(x: Tensor, newWidth: number): Tensor {
  const width = x.shape[x.rank - 1];
  const shape = [...x.shape.slice(0, -1), newWidth];
  const resized = Tensor.empty(x.gpu, shape);
  launch(
    x.gpu,
    { name: "attention", variant: "resize-rows", code: ATTENTION_RESIZE_ROWS_WGSL },
    {
      bindings: [x, resized],
      params: new Params().u32(resized.size, width, newWidth),
      workgroups: grid(resized.size, 256),
      flops: 0,
      bytes: 4 * (x.size + resized.size),
    },
  );
  return resized;
}

// ---------------------------------------------------------------------------------------------------
// Validation, cost, dispatch.

/** True when `subgroupBroadcast` over SUBGROUP_LANES lanes is available on this device. */
export function attentionCanUseSubgroups(gpu: Gpu): boolean {
  const minimum = gpu.device.adapterInfo?.subgroupMinSize ?? 0;
  return gpu.features.has("subgroups") && minimum >= SUBGROUP_LANES;
}

/**
 * On the CPU adapter, workgroup-memory tiles only add barriers and per-lane loads, so it runs
 * "cpu-rows" when it has subgroups; GPUs run "gpu-tiled". (The shape does not change the choice
 * today; it is part of the signature so a split-K variant for short query blocks can be chosen here.)
 */
export function chooseAttentionVariant(gpu: Gpu, _shape: AttentionShape): AttentionVariant {
  return gpu.kind === "cpu" && attentionCanUseSubgroups(gpu) ? "cpu-rows" : "gpu-tiled";
}

/**
 * Algorithmic work (FlashAttention's convention): forward = 2 matmuls (4 D FLOPs per query-key pair)
 * plus the softmax; backward = 5 matmuls (10 D). Bytes count each tensor once, read or written.
 */
export function attentionCost(shape: AttentionShape) {
  const { batch, heads, queryLength, keyLength, headDim } = shape;
  const pairs = batch * heads * queryLength * keyLength;
  const queryBytes = 4 * batch * heads * queryLength * headDim;
  const keyBytes = 4 * batch * heads * keyLength * headDim;
  return {
    forwardFlops: pairs * (4 * headDim + 4),
    forwardBytes: 2 * queryBytes + 2 * keyBytes + 4 * batch * heads * queryLength,
    backwardFlops: pairs * (10 * headDim + 6),
    backwardBytes: 4 * queryBytes + 4 * keyBytes + 8 * batch * heads * queryLength,
  };
}

/** Checks q, k and v (f32, rank 4, matching batch, heads, head dimension and key length). */
export function attentionShapeOf(q: Tensor, k: Tensor, v: Tensor, op = "attention"): AttentionShape {
  for (const [name, tensor] of [
    ["q", q],
    ["k", k],
    ["v", v],
  ] as const) {
    if (tensor.dtype !== "f32") throw new OpError(op, `needs f32 ${name}, got ${tensor.dtype}`, { q, k, v });
    if (tensor.rank !== 4)
      throw new OpError(op, `${name} must be [batch, heads, length, headDim]`, { q, k, v });
  }
  const [batch, heads, queryLength, headDim] = q.shape;
  const [keyBatch, keyHeads, keyLength, keyDim] = k.shape;
  if (keyBatch !== batch || keyHeads !== heads || keyDim !== headDim) {
    throw new OpError(op, "k must match q in batch, heads and head dimension", { q, k });
  }
  if (v.shape[0] !== batch || v.shape[1] !== heads || v.shape[2] !== keyLength || v.shape[3] !== headDim) {
    throw new OpError(op, "v must have the shape of k", { k, v });
  }
  return { batch, heads, queryLength, keyLength, headDim };
}

/** Shape, scale and mask checked; shared by the fused op and the composition. */
interface ResolvedAttention {
  shape: AttentionShape;
  scale: number;
  keyMask: Tensor | undefined;
}

function resolveAttention(
  op: string,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionKernelOptions,
): ResolvedAttention {
  const shape = attentionShapeOf(q, k, v, op);
  const scale = options.scale ?? 1 / Math.sqrt(shape.headDim);
  if (!Number.isFinite(scale)) throw new OpError(op, `scale must be finite, got ${scale}`, { q });
  const keyMask = options.keyMask;
  if (keyMask) {
    if (keyMask.dtype !== "f32") {
      throw new OpError(op, `needs an f32 keyMask, got ${keyMask.dtype}`, { keyMask });
    }
    if (keyMask.rank !== 2 || keyMask.shape[0] !== shape.batch || keyMask.shape[1] !== shape.keyLength) {
      throw new OpError(op, "keyMask must be [batch, keyLength]", { q, k, keyMask });
    }
  }
  return { shape, scale, keyMask };
}

function resolveVariant(gpu: Gpu, resolved: ResolvedAttention, forced: AttentionVariant | undefined) {
  const variant = forced ?? chooseAttentionVariant(gpu, resolved.shape);
  if (!ATTENTION_VARIANTS.includes(variant)) throw new OpError("attention", `unknown variant "${variant}"`);
  if (variant === "cpu-rows" && !attentionCanUseSubgroups(gpu)) {
    throw new OpError(
      "attention",
      `variant cpu-rows needs the 'subgroups' feature with >= ${SUBGROUP_LANES} lanes, which this adapter lacks`,
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
    { name: "attention", variant: run.variant, code: attentionSource("forward", run.variant) },
    {
      bindings: [q, k, v, run.keyMask ?? q, output, logSumExp],
      params: fusedParams(run),
      workgroups: [Math.ceil(queryLength / ROWS_PER_WORKGROUP), batch * heads],
      flops: cost.forwardFlops,
      bytes: cost.forwardBytes,
    },
  );
  return { output, logSumExp };
}

/**
 * Backward kernels: row statistics from the unpadded output and gradient, then dQ and dK/dV from the
 * padded q, k, v and output gradient. Returns padded gradients.
 */
function fusedBackward(
  padded: { q: Tensor; k: Tensor; v: Tensor; gradOutput: Tensor },
  output: Tensor,
  gradOutput: Tensor,
  logSumExp: Tensor,
  run: FusedRun,
): [Tensor, Tensor, Tensor] {
  const { q, k, v } = padded;
  const gpu = q.gpu;
  const { batch, heads, queryLength, keyLength, headDim } = run.shape;
  const queryRows = batch * heads * queryLength;
  const rowStats = Tensor.empty(gpu, [queryRows, 2]);
  launch(
    gpu,
    { name: "attentionBackward", variant: "row-stats", code: ATTENTION_ROW_STATS_WGSL },
    {
      bindings: [output, gradOutput, logSumExp, rowStats],
      params: new Params().u32(queryRows, headDim),
      workgroups: grid(queryRows, 64),
      flops: 2 * queryRows * headDim,
      bytes: 4 * queryRows * (2 * headDim + 3),
    },
  );
  const params = fusedParams(run);
  const mask = run.keyMask ?? q; // bound but never read when useMask = 0 (layout "auto" needs a buffer)
  const pairs = batch * heads * queryLength * keyLength;
  const gradQuery = Tensor.empty(gpu, q.shape);
  launch(
    gpu,
    {
      name: "attentionBackward",
      variant: `${run.variant}:dQ`,
      code: attentionSource("backwardQuery", run.variant),
    },
    {
      bindings: [q, k, v, mask, padded.gradOutput, rowStats, gradQuery],
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
      code: attentionSource("backwardKeyValue", run.variant),
    },
    {
      bindings: [q, k, v, mask, padded.gradOutput, rowStats, gradKey, gradValue],
      params,
      workgroups: [Math.ceil(keyLength / ROWS_PER_WORKGROUP), batch * heads],
      flops: pairs * (8 * headDim + 6),
      bytes: 4 * (2 * q.size + 4 * k.size) + 8 * queryRows,
    },
  );
  rowStats.release();
  return [gradQuery, gradKey, gradValue];
}

/** The tensor itself when its rows already have `width` floats, else a zero-padded copy. */
const withWidth = (x: Tensor, width: number) => (x.shape[x.rank - 1] === width ? x : resizeRows(x, width));
/** Releases `copy` when it is a padded copy rather than the original. */
const releaseCopy = (copy: Tensor, original: Tensor) => {
  if (copy !== original) copy.release();
};
/** A padded result trimmed back to `width` (the padded one released). */
function trimmed(x: Tensor, width: number): Tensor {
  if (x.shape[x.rank - 1] === width) return x;
  const result = resizeRows(x, width);
  x.release();
  return result;
}

/**
 * softmax(scale * q k^T, masked over keys) v, fused. q [B, H, Lq, D], k and v [B, H, Lk, D];
 * returns [B, H, Lq, D]. Records its flash-style backward when q, k or v needs a gradient.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionKernelOptions = {}): Tensor {
  const resolved = resolveAttention("attention", q, k, v, options);
  const gpu = q.gpu;
  checkDispatch(gpu, resolved.shape, q, k);
  const { headDim } = resolved.shape;
  const run: FusedRun = {
    ...resolved,
    variant: resolveVariant(gpu, resolved, options.variant),
    paddedDim: Math.ceil(headDim / 4) * 4,
  };
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
    const grads = fusedBackward(padded, output, gradOutput!, forward.logSumExp, run);
    releaseCopy(padded.q, q);
    releaseCopy(padded.k, k);
    releaseCopy(padded.v, v);
    releaseCopy(padded.gradOutput, gradOutput!);
    return grads.map((grad) => trimmed(grad, headDim));
  };
  record("attention", [q, k, v], [output], backwardFn, [forward.logSumExp]);
  return output;
}

export interface AttentionComposedOptions {
  scale?: number;
  keyMask?: Tensor;
  /** Force the variants of the parts (benchmarks); default: each op's own choice. */
  matmulVariant?: MatmulVariant;
  softmaxVariant?: SoftmaxVariant;
}

/**
 * The same attention composed from our other ops: scores = q k^T (matmul), probabilities =
 * softmax(scale * scores) with the key mask, output = probabilities v (matmul). It materialises the
 * [B, H, Lq, Lk] scores and probabilities (memory quadratic in length); the fused `attention` exists
 * to avoid exactly that. Kept as the benchmark baseline and a second test oracle; differentiable
 * through the parts' own backward passes.
 */
export function attentionComposed(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionComposedOptions = {},
): Tensor {
  const { scale, keyMask } = resolveAttention("attentionComposed", q, k, v, options);
  const scores = matmul(q, k, { transposeB: true, variant: options.matmulVariant });
  const probabilities = softmax(scores, -1, { scale, mask: keyMask, variant: options.softmaxVariant });
  const output = matmul(probabilities, v, { variant: options.matmulVariant });
  if (!needsGrad(q, k, v)) {
    // Otherwise the tape owns them and backward() releases them.
    scores.release();
    probabilities.release();
  }
  return output;
}

// ---------------------------------------------------------------------------------------------------
// Float64 reference: explicit score matrices, the specification the kernels are tested against.

export interface AttentionReferenceOptions {
  scale?: number;
  /** [B * Lk] of 1 / 0. */
  keyMask?: Float64Array;
}

function referenceProbabilities(
  q: Float64Array,
  k: Float64Array,
  shape: AttentionShape,
  options: AttentionReferenceOptions,
  head: number,
  i: number,
): { probabilities: Float64Array; logSumExp: number } {
  const { heads, queryLength, keyLength, headDim } = shape;
  const scale = options.scale ?? 1 / Math.sqrt(headDim);
  const batch = Math.floor(head / heads);
  const scores = new Float64Array(keyLength);
  let maximum = -Infinity;
  for (let j = 0; j < keyLength; j++) {
    if (options.keyMask && options.keyMask[batch * keyLength + j] === 0) {
      scores[j] = -Infinity;
      continue;
    }
    let dot = 0;
    for (let d = 0; d < headDim; d++) {
      dot += q[(head * queryLength + i) * headDim + d] * k[(head * keyLength + j) * headDim + d];
    }
    scores[j] = scale * dot;
    maximum = Math.max(maximum, scores[j]);
  }
  const probabilities = new Float64Array(keyLength);
  if (maximum === -Infinity) return { probabilities, logSumExp: 0 }; // every key masked
  let sum = 0;
  for (let j = 0; j < keyLength; j++) sum += Math.exp(scores[j] - maximum);
  for (let j = 0; j < keyLength; j++) probabilities[j] = Math.exp(scores[j] - maximum) / sum;
  return { probabilities, logSumExp: maximum + Math.log(sum) };
}

export const attentionReference = {
  /** Output [B, H, Lq, D] and the per-row log-sum-exp [B, H, Lq] (0 for fully masked rows). */
  forward(
    q: Float64Array,
    k: Float64Array,
    v: Float64Array,
    shape: AttentionShape,
    options: AttentionReferenceOptions = {},
  ): { output: Float64Array; logSumExp: Float64Array } {
    const { batch, heads, queryLength, keyLength, headDim } = shape;
    const output = new Float64Array(batch * heads * queryLength * headDim);
    const logSumExp = new Float64Array(batch * heads * queryLength);
    for (let head = 0; head < batch * heads; head++) {
      for (let i = 0; i < queryLength; i++) {
        const row = referenceProbabilities(q, k, shape, options, head, i);
        logSumExp[head * queryLength + i] = row.logSumExp;
        for (let j = 0; j < keyLength; j++) {
          const p = row.probabilities[j];
          if (p === 0) continue;
          for (let d = 0; d < headDim; d++) {
            output[(head * queryLength + i) * headDim + d] += p * v[(head * keyLength + j) * headDim + d];
          }
        }
      }
    }
    return { output, logSumExp };
  },

  /** Gradients with respect to q, k and v of sum(gradOutput * forward(q, k, v)). */
  backward(
    q: Float64Array,
    k: Float64Array,
    v: Float64Array,
    gradOutput: Float64Array,
    shape: AttentionShape,
    options: AttentionReferenceOptions = {},
  ): { gradQuery: Float64Array; gradKey: Float64Array; gradValue: Float64Array } {
    const { batch, heads, queryLength, keyLength, headDim } = shape;
    const scale = options.scale ?? 1 / Math.sqrt(headDim);
    const gradQuery = new Float64Array(q.length);
    const gradKey = new Float64Array(k.length);
    const gradValue = new Float64Array(v.length);
    const at = (head: number, length: number, row: number, d: number) => (head * length + row) * headDim + d;
    for (let head = 0; head < batch * heads; head++) {
      for (let i = 0; i < queryLength; i++) {
        const { probabilities } = referenceProbabilities(q, k, shape, options, head, i);
        // dP_ij = dO_i . v_j; dS_ij = P_ij (dP_ij - sum_l P_il dP_il)
        const gradProbabilities = new Float64Array(keyLength);
        let weighted = 0;
        for (let j = 0; j < keyLength; j++) {
          let dot = 0;
          for (let d = 0; d < headDim; d++) {
            dot += gradOutput[at(head, queryLength, i, d)] * v[at(head, keyLength, j, d)];
          }
          gradProbabilities[j] = dot;
          weighted += probabilities[j] * dot;
        }
        for (let j = 0; j < keyLength; j++) {
          const p = probabilities[j];
          const gradScore = p * (gradProbabilities[j] - weighted);
          for (let d = 0; d < headDim; d++) {
            gradValue[at(head, keyLength, j, d)] += p * gradOutput[at(head, queryLength, i, d)];
            gradQuery[at(head, queryLength, i, d)] += scale * gradScore * k[at(head, keyLength, j, d)];
            gradKey[at(head, keyLength, j, d)] += scale * gradScore * q[at(head, queryLength, i, d)];
          }
        }
      }
    }
    return { gradQuery, gradKey, gradValue };
  },
};
