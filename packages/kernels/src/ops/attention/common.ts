/**
 * What every attention variant shares: the kernel templates (forward, dQ, dK/dV) and the generator
 * that fills them with the unrolled per-block lines. A variant (cpu-rows.ts, gpu-tiled.ts) only says
 * how a block of shared rows reaches the invocations (`SharedBlock`) and how many rows a block has;
 * `attentionKernels` turns that into the exact WGSL `launch` compiles (`cxr kernels dump attention`).
 *
 * Head rows are arrays of `Row` (vec4), `vectors` = D / 4 of them per row. Every kernel gives each
 * invocation one row (a query row; a key row for dK/dV) and streams the other side in blocks. Blocks
 * are unrolled by generating the per-row lines below (WGSL has no macros, and private arrays indexed
 * in loops compile very slowly on llvmpipe).
 */
import { wgsl } from "../../runtime/kernel.ts";

/** Largest head dimension: workgroup tiles are sized for it (SD uses 40, 64, 80 and 160). */
export const MAX_ATTENTION_HEAD_DIM = 256;

/** Rows (queries, or keys for dK/dV) per workgroup: one per invocation. */
export const ROWS_PER_WORKGROUP = 64;

/** How a variant delivers a block of shared rows to the invocations of a workgroup. */
export interface SharedBlock {
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
export type SharedBlockFactory = (
  buffers: string[],
  rowBase: string,
  count: string,
  block: number,
) => SharedBlock;

/** The kernels that share one template each (forward and the recomputing backward). */
export interface AttentionTemplateKernels {
  forward: string;
  backwardQuery: string;
  backwardKeyValue: string;
}

export type AttentionKernel = keyof AttentionTemplateKernels;

/** One variant's kernels, exactly as launched: forward, both backwards (chunked-scores.ts). */
export interface AttentionKernels extends AttentionTemplateKernels {
  backwardQueryChunk: string;
  backwardKeyValueChunk: string;
}

export const ATTENTION_COMMON_WGSL = `
struct Params {
  queryLength: u32, keyLength: u32, heads: u32, useMask: u32, vectors: u32, scaleLog2: f32, scale: f32,{{extraParams}}
}
alias Row = vec4<f32>;
const MAX_VECTORS: u32 = {{maxVectors}}u;
const ROWS: u32 = {{rows}}u;
// Below every real score; finite, because WGSL lets implementations assume finite math.
const NEG_BIG: f32 = -3.0e38;
const LN2: f32 = 0.6931471805599453;
const LOG2E: f32 = 1.4426950408889634;
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

/** Bindings 0-5 of every backward kernel that reads q, k, v, the mask, dO and the row statistics. */
export const BACKWARD_INPUTS_WGSL = `@group(0) @binding(0) var<storage, read> query: array<Row>;
@group(0) @binding(1) var<storage, read> key: array<Row>;
@group(0) @binding(2) var<storage, read> value: array<Row>;
@group(0) @binding(3) var<storage, read> keyMask: array<f32>;
@group(0) @binding(4) var<storage, read> gradOutput: array<Row>;
@group(0) @binding(5) var<storage, read> rowStats: array<vec2<f32>>;`;

/**
 * Entry point header of every fused kernel; workgroup (x: row block, y: batch * head). The kernels
 * with several rows per invocation derive theirs from `wid.x` and `lane` (`perRow`).
 */
export const ENTRY_WGSL = `
@compute @workgroup_size(ROWS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32{{laneBuiltin}}) {
  let head = wid.y;
  let batch = head / params.heads;
  let vectors = params.vectors;`;

/** The recomputing backward's header: one row per invocation. */
const ONE_ROW_ENTRY_WGSL = `${ENTRY_WGSL}
  let row = wid.x * ROWS + lane;`;

/**
 * Query rows per invocation in the forward and in both chunked-scores backward kernels (key rows in
 * its dK/dV step) of cpu-rows and gpu-tiled: each shared row a block delivers (a subgroup broadcast or
 * a tile read) feeds that many rows' multiply-adds, which halves the shuffles per multiply-add on
 * llvmpipe. Measured there (kernel alone, CPU time, one process, median of 11): forward 221 ms vs 297
 * with one row. A variant sets its own counts (`AttentionVariantSpec`).
 */
export const ROWS_PER_INVOCATION = 2;

/** `line(r)` for each row r < `rows` of an invocation, joined. */
export const eachRow = (rows: number, line: (r: number) => string, separator = "\n  ") =>
  Array.from({ length: rows }, (_, r) => line(r)).join(separator);

/**
 * Forward, for the invocation's query rows `row{r}` (lane, lane + ROWS, ...). Per block: scores
 * s_t = q . k_t as scalar dot products (log2 units), block max, rescale of the running sum and of the
 * accumulator (the output row), then accumulator += p_t v_t. Rows past the end compute the last row
 * again (keeping control flow uniform for broadcasts and barriers) but never store.
 */
const ATTENTION_FORWARD_WGSL = `{{enable}}
@group(0) @binding(0) var<storage, read> query: array<Row>;
@group(0) @binding(1) var<storage, read> key: array<Row>;
@group(0) @binding(2) var<storage, read> value: array<Row>;
@group(0) @binding(3) var<storage, read> keyMask: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<Row>;
@group(0) @binding(5) var<storage, read_write> logSumExp: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;
${ATTENTION_COMMON_WGSL}${ENTRY_WGSL}
  let keyRow0 = head * params.keyLength;
  {{queryRows}}
  for (var start = 0u; start < params.keyLength; start += {{block}}u) {
    {{stage}}
    {{declareScores}}
    for (var c = 0u; c < vectors; c++) {
      {{loadKeys}}
      {{accumulateScores}}
    }
    {{probabilities}}
    for (var c = 0u; c < vectors; c++) {
      {{loadValues}}
      {{accumulateValues}}
    }
    {{finish}}
  }
  // A row whose keys are all masked has runningSum 0: its output stays zeros and its log-sum-exp is
  // stored as 0 (backward masks every one of its probabilities to 0 anyway).
  {{normalize}}
}`;

/**
 * dQ, per query row: p_t = exp(s_t - lse), dS_t = scale * p_t (dO . v_t - delta), dQ += dS_t k_t.
 */
const ATTENTION_BACKWARD_QUERY_WGSL = `{{enable}}
${BACKWARD_INPUTS_WGSL}
@group(0) @binding(6) var<storage, read_write> gradQuery: array<Row>;
@group(0) @binding(7) var<uniform> params: Params;
${ATTENTION_COMMON_WGSL}
${ONE_ROW_ENTRY_WGSL}
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
const ATTENTION_BACKWARD_KEY_VALUE_WGSL = `{{enable}}
${BACKWARD_INPUTS_WGSL}
@group(0) @binding(6) var<storage, read_write> gradKey: array<Row>;
@group(0) @binding(7) var<storage, read_write> gradValue: array<Row>;
@group(0) @binding(8) var<uniform> params: Params;
${ATTENTION_COMMON_WGSL}
${ONE_ROW_ENTRY_WGSL}
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

export const lines = (block: number, line: (t: number) => string, separator = "\n    ") =>
  Array.from({ length: block }, (_, t) => line(t)).join(separator);
export const sumOf = (block: number, term: (t: number) => string) =>
  Array.from({ length: block }, (_, t) => term(t)).join(" + ");

/** Fills a kernel template's generated (unrolled) blocks for one variant. */
export function kernelBlocks(kernel: AttentionKernel, spec: AttentionVariantSpec): Record<string, string> {
  const { sharedBlock } = spec;
  const { block, rowsPerInvocation } = kernel === "forward" ? spec.forward : spec.backward;
  const perRow = (line: (r: number) => string, separator?: string) =>
    eachRow(rowsPerInvocation, line, separator);
  const declareScores = lines(block, (t) => `var s${t} = 0.0;`, " ");
  const declareGradProbabilities = lines(block, (t) => `var g${t} = 0.0;`, " ");
  if (kernel === "forward") {
    const shared = sharedBlock(["key", "value"], "keyRow0", "params.keyLength", block);
    return {
      sharedDeclarations: shared.declarations,
      queryRows: perRow(
        (r) => `let row${r} = wid.x * ${rowsPerInvocation}u * ROWS + ${r}u * ROWS + lane;
  let inRange${r} = row${r} < params.queryLength;
  let queryRow${r} = head * params.queryLength + min(row${r}, params.queryLength - 1u);
  let queryBase${r} = queryRow${r} * vectors;
  if (inRange${r}) { for (var c = 0u; c < vectors; c++) { output[queryBase${r} + c] = Row(); } }
  var runningMax${r} = NEG_BIG;
  var runningSum${r} = 0.0;`,
      ),
      stage: shared.stage,
      declareScores: perRow((r) => lines(block, (t) => `var s${r}_${t} = 0.0;`, " "), "\n    "),
      loadKeys: `${shared.loadsFor(["key"])}
      ${perRow((r) => `let q${r} = query[queryBase${r} + c];`, " ")}`,
      accumulateScores: lines(
        block,
        (t) =>
          `let key${t} = ${shared.fetch("key", t)}; ${perRow((r) => `s${r}_${t} += dot(q${r}, key${t});`, " ")}`,
        "\n      ",
      ),
      probabilities: `${lines(block, (t) => `let kept${t} = keyInBlock(start, ${t}u, batch);`)}
    ${perRow(
      (
        r,
      ) => `${lines(block, (t) => `let score${r}_${t} = select(NEG_BIG, s${r}_${t} * params.scaleLog2, kept${t});`)}
    let blockMax${r} = max(runningMax${r}, ${Array.from({ length: block }, (_, t) => `score${r}_${t}`).reduce((a, b) => `max(${a}, ${b})`)});
    let correction${r} = exp2(runningMax${r} - blockMax${r});
    ${lines(block, (t) => `let p${r}_${t} = select(0.0, exp2(score${r}_${t} - blockMax${r}), score${r}_${t} > NEG_BIG);`)}
    runningSum${r} = runningSum${r} * correction${r} + ${sumOf(block, (t) => `p${r}_${t}`)};
    runningMax${r} = blockMax${r};`,
      "\n    ",
    )}`,
      loadValues: `${shared.loadsFor(["value"])}
      ${lines(block, (t) => `let value${t} = ${shared.fetch("value", t)};`, " ")}`,
      accumulateValues: perRow(
        (
          r,
        ) => `let accumulated${r} = output[queryBase${r} + c] * correction${r} + ${sumOf(block, (t) => `p${r}_${t} * value${t}`)};
      if (inRange${r}) { output[queryBase${r} + c] = accumulated${r}; }`,
        "\n      ",
      ),
      finish: shared.finish,
      normalize: perRow(
        (r) => `if (inRange${r}) {
    let inverseSum = select(0.0, 1.0 / runningSum${r}, runningSum${r} > 0.0);
    for (var c = 0u; c < vectors; c++) { output[queryBase${r} + c] = output[queryBase${r} + c] * inverseSum; }
    logSumExp[queryRow${r}] = select(0.0, (runningMax${r} + log2(runningSum${r})) * LN2, runningSum${r} > 0.0);
  }`,
      ),
    };
  }
  if (kernel === "backwardQuery") {
    const shared = sharedBlock(["key", "value"], "keyRow0", "params.keyLength", block);
    return {
      sharedDeclarations: shared.declarations,
      stage: shared.stage,
      declareScores,
      declareGradProbabilities,
      loadKeysValues: shared.loadsFor(["key", "value"]),
      accumulateScores: lines(block, (t) => `s${t} += dot(q, ${shared.fetch("key", t)});`, " "),
      accumulateGradProbabilities: lines(block, (t) => `g${t} += dot(dO, ${shared.fetch("value", t)});`, " "),
      gradScores: lines(
        block,
        (t) =>
          `let dS${t} = select(0.0, params.scale * exp2(s${t} * params.scaleLog2 - logSumExp2) * (g${t} - delta), keyInBlock(start, ${t}u, batch));`,
      ),
      loadKeys: shared.loadsFor(["key"]),
      weightedKeys: sumOf(block, (t) => `dS${t} * ${shared.fetch("key", t)}`),
      finish: shared.finish,
    };
  }
  const shared = sharedBlock(["query", "gradOutput"], "queryRow0", "params.queryLength", block);
  return {
    sharedDeclarations: shared.declarations,
    stage: `${shared.stage}
    ${lines(block, (t) => `let stats${t} = rowStats[queryRow0 + min(start + ${t}u, params.queryLength - 1u)];`)}`,
    declareScores,
    declareGradProbabilities,
    loadQueriesGradOutputs: shared.loadsFor(["query", "gradOutput"]),
    accumulateScores: lines(block, (t) => `s${t} += dot(k, ${shared.fetch("query", t)});`, " "),
    accumulateGradProbabilities: lines(
      block,
      (t) => `g${t} += dot(v, ${shared.fetch("gradOutput", t)});`,
      " ",
    ),
    gradScores: lines(
      block,
      (t) =>
        `let p${t} = select(0.0, exp2(s${t} * params.scaleLog2 - stats${t}.x * LOG2E), kept & (start + ${t}u < params.queryLength));
    let dS${t} = params.scale * p${t} * (g${t} - stats${t}.y);`,
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

/** Shared rows per block and own rows per invocation of a multi-row kernel. */
export interface KernelShape {
  block: number;
  rowsPerInvocation: number;
}

/** What makes a variant: its shared-block delivery, its kernels' shapes and whether it uses subgroups. */
export interface AttentionVariantSpec {
  sharedBlock: SharedBlockFactory;
  forward: KernelShape;
  /** Both chunked-scores kernels; the recomputing backward's kernels take its block (one row each). */
  backward: KernelShape;
  subgroups: boolean;
}

/** A spec whose kernels all take `block` shared rows and ROWS_PER_INVOCATION own rows. */
export const uniformSpec = (sharedBlock: SharedBlockFactory, block: number, subgroups: boolean) => {
  const shape = { block, rowsPerInvocation: ROWS_PER_INVOCATION };
  return { sharedBlock, forward: shape, backward: shape, subgroups } satisfies AttentionVariantSpec;
};

/** The three kernels of one variant, filled in once (building them is string work). */
export function attentionKernels(spec: AttentionVariantSpec): AttentionTemplateKernels {
  const source = (kernel: AttentionKernel) =>
    wgsl(TEMPLATES[kernel], {
      ...kernelBlocks(kernel, spec),
      extraParams: "",
      enable: spec.subgroups ? "enable subgroups;" : "",
      laneBuiltin: spec.subgroups ? ", @builtin(subgroup_invocation_id) subgroupLane: u32" : "",
      maxVectors: MAX_ATTENTION_HEAD_DIM / 4,
      rows: ROWS_PER_WORKGROUP,
      block: (kernel === "forward" ? spec.forward : spec.backward).block,
    });
  return {
    forward: source("forward"),
    backwardQuery: source("backwardQuery"),
    backwardKeyValue: source("backwardKeyValue"),
  };
}
