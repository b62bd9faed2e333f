/**
 * Backward "chunked-scores": 10 D FLOPs per query-key pair instead of the recomputing backward's 14 D,
 * with memory still linear in the sequence length.
 *
 * The recomputing backward (common.ts) computes the scores s_ij = q_i . k_j and dP_ij = dO_i . v_j
 * twice: once per query row for dQ and once per key row for dK and dV, because WGSL has no float
 * atomics to let one pass scatter into the other's rows. Here the queries go in chunks of C rows:
 * 1. per query row of the chunk (the dQ kernel of the recomputing backward, plus one store): s, dP,
 *    P_ij = exp(s_ij - lse_i), dS_ij = scale P_ij (dP_ij - delta_i), dQ_i = sum_j dS_ij k_j, and
 *    (P_ij, dS_ij) written to a key-major scratch buffer [B * H, Lk, C'] (C' = C rounded up to a whole
 *    backward block: step 2 reads a key's run of rows two per vec4; 21% less CPU time for step 2 than
 *    the query-major [B * H, C, Lk] it replaced, kernel alone at B1 H8 L1024 D64, load 14-18);
 * 2. per key row: dV_j += sum_i P_ij dO_i and dK_j += sum_i dS_ij q_i over the chunk's queries, reading
 *    P and dS back instead of recomputing them (4 D per pair instead of 8 D).
 * The scratch holds C x Lk pairs per head: C is chosen so it stays within a fixed budget (index.ts),
 * never below one workgroup of rows, so memory grows linearly with the length, not quadratically.
 * Both kernels take the variant's shared-block delivery (subgroup broadcast or workgroup tiles).
 */

import { wgsl } from "../../runtime/kernel.ts";
import {
  ATTENTION_COMMON_WGSL,
  type AttentionKernels,
  type AttentionVariantSpec,
  attentionKernels,
  BACKWARD_INPUTS_WGSL,
  ENTRY_WGSL,
  eachRow,
  lines,
  MAX_ATTENTION_HEAD_DIM,
  ROWS_PER_WORKGROUP,
  sumOf,
} from "./common.ts";

/** The chunk's first query row and its row count, after the common parameters. */
export const CHUNK_PARAMS = " chunkStart: u32, chunkRows: u32, scoreRows: u32,";

/**
 * Step 1, per query row of the chunk (rows `row{r}`, r < the variant's rowsPerInvocation): scores and dP as scalar
 * dot products over the block's keys, P and dS, their store, then dQ += dS k.
 */
const QUERY_CHUNK_WGSL = `{{enable}}
${BACKWARD_INPUTS_WGSL}
@group(0) @binding(6) var<storage, read_write> gradQuery: array<Row>;
@group(0) @binding(7) var<storage, read_write> scores: array<vec2<f32>>;
@group(0) @binding(8) var<uniform> params: Params;
${ATTENTION_COMMON_WGSL}${ENTRY_WGSL}
  let chunkEnd = min(params.queryLength, params.chunkStart + params.chunkRows);
  let keyRow0 = head * params.keyLength;
  // Rows past the chunk's end compute its last row again (uniform control flow) and never store.
  {{queryRows}}
  for (var start = 0u; start < params.keyLength; start += {{block}}u) {
    {{stage}}
    {{declareScores}}
    for (var c = 0u; c < vectors; c++) {
      {{loadKeysValues}}
      {{loadQueriesGradOutputs}}
      {{accumulateScores}}
    }
    {{gradScores}}
    {{storeScores}}
    for (var c = 0u; c < vectors; c++) {
      {{loadKeys}}
      {{accumulateGradQuery}}
    }
    {{finish}}
  }
}`;

/** Step 2: dK and dV over one chunk of query rows from the stored (P, dS); key rows `row{r}`. */
const KEY_VALUE_CHUNK_WGSL = `{{enable}}
@group(0) @binding(0) var<storage, read> query: array<Row>;
@group(0) @binding(1) var<storage, read> keyMask: array<f32>;
@group(0) @binding(2) var<storage, read> gradOutput: array<Row>;
@group(0) @binding(3) var<storage, read> scores: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> gradKey: array<Row>;
@group(0) @binding(5) var<storage, read_write> gradValue: array<Row>;
@group(0) @binding(6) var<uniform> params: Params;
${ATTENTION_COMMON_WGSL}${ENTRY_WGSL}
  let queryRow0 = head * params.queryLength;
  let chunkEnd = min(params.queryLength, params.chunkStart + params.chunkRows);
  // Invocation rows: lane, lane + ROWS, ... of the workgroup's block of keys; rows past the end compute
  // the last key again and never store. Step 1 stored zeros for dropped keys already; checking here
  // keeps a dropped key's gradient exactly 0.
  {{keyRows}}
  for (var start = params.chunkStart; start < chunkEnd; start += {{block}}u) {
    {{stage}}
    {{loadScores}}
    for (var c = 0u; c < vectors; c++) {
      {{loadQueriesGradOutputs}}
      {{accumulate}}
    }
    {{finish}}
  }
}`;

/** The two kernels of the chunked-scores backward for one shared-block delivery. */
export interface ChunkedScoresKernels {
  backwardQueryChunk: string;
  backwardKeyValueChunk: string;
}

export function chunkedScoresKernels(spec: AttentionVariantSpec): ChunkedScoresKernels {
  const { sharedBlock } = spec;
  const { block, rowsPerInvocation } = spec.backward;
  const perRow = (line: (r: number) => string, separator?: string) =>
    eachRow(rowsPerInvocation, line, separator);
  const fill = (template: string, blocks: Record<string, string>) =>
    wgsl(template, {
      ...blocks,
      extraParams: CHUNK_PARAMS,
      enable: spec.subgroups ? "enable subgroups;" : "",
      laneBuiltin: spec.subgroups ? ", @builtin(subgroup_invocation_id) subgroupLane: u32" : "",
      maxVectors: MAX_ATTENTION_HEAD_DIM / 4,
      rows: ROWS_PER_WORKGROUP,
      block,
    });
  const keys = sharedBlock(["key", "value"], "keyRow0", "params.keyLength", block);
  const queryBlocks = {
    sharedDeclarations: keys.declarations,
    queryRows: perRow(
      (
        r,
      ) => `let chunkRow${r} = wid.x * ${rowsPerInvocation}u * ROWS + ${r}u * ROWS + lane; // row within the chunk
  let inRange${r} = params.chunkStart + chunkRow${r} < chunkEnd;
  let queryRow${r} = head * params.queryLength + min(params.chunkStart + chunkRow${r}, chunkEnd - 1u);
  let queryBase${r} = queryRow${r} * vectors;
  let stats${r} = rowStats[queryRow${r}];
  let logSumExp2_${r} = stats${r}.x * LOG2E;
  let delta${r} = stats${r}.y;
  if (inRange${r}) { for (var c = 0u; c < vectors; c++) { gradQuery[queryBase${r} + c] = Row(); } }`,
    ),
    stage: keys.stage,
    declareScores: perRow(
      (r) => lines(block, (t) => `var s${r}_${t} = 0.0; var g${r}_${t} = 0.0;`, " "),
      "\n    ",
    ),
    loadKeysValues: keys.loadsFor(["key", "value"]),
    loadQueriesGradOutputs: perRow(
      (r) => `let q${r} = query[queryBase${r} + c]; let dO${r} = gradOutput[queryBase${r} + c];`,
      " ",
    ),
    accumulateScores: lines(
      block,
      (t) => `let key${t} = ${keys.fetch("key", t)}; let value${t} = ${keys.fetch("value", t)};
      ${perRow((r) => `s${r}_${t} += dot(q${r}, key${t}); g${r}_${t} += dot(dO${r}, value${t});`, " ")}`,
      "\n      ",
    ),
    gradScores: lines(
      block,
      (t) => `let kept${t} = keyInBlock(start, ${t}u, batch);
    ${perRow(
      (r) => `let p${r}_${t} = select(0.0, exp2(s${r}_${t} * params.scaleLog2 - logSumExp2_${r}), kept${t});
    let dS${r}_${t} = params.scale * p${r}_${t} * (g${r}_${t} - delta${r});`,
      "\n    ",
    )}`,
    ),
    storeScores: perRow(
      (r) => `if (inRange${r}) {
      let scoreBase = (head * params.keyLength + start) * params.scoreRows + chunkRow${r};
      ${lines(block, (t) => `if (start + ${t}u < params.keyLength) { scores[scoreBase + ${t}u * params.scoreRows] = vec2<f32>(p${r}_${t}, dS${r}_${t}); }`, "\n      ")}
    }`,
      "\n    ",
    ),
    loadKeys: `${keys.loadsFor(["key"])}
      ${lines(block, (t) => `let key${t} = ${keys.fetch("key", t)};`, " ")}`,
    accumulateGradQuery: perRow(
      (
        r,
      ) => `let accumulated${r} = gradQuery[queryBase${r} + c] + ${sumOf(block, (t) => `dS${r}_${t} * key${t}`)};
      if (inRange${r}) { gradQuery[queryBase${r} + c] = accumulated${r}; }`,
      "\n      ",
    ),
    finish: keys.finish,
  };

  const shared = sharedBlock(["query", "gradOutput"], "queryRow0", "chunkEnd", block);
  const keyValueBlocks = {
    sharedDeclarations: shared.declarations,
    keyRows: perRow(
      (r) => `let row${r} = wid.x * ${rowsPerInvocation}u * ROWS + ${r}u * ROWS + lane;
  let inRange${r} = row${r} < params.keyLength;
  let keyIndex${r} = min(row${r}, params.keyLength - 1u);
  let keyBase${r} = (head * params.keyLength + keyIndex${r}) * vectors;
  let kept${r} = keyKept(batch, keyIndex${r});
  // The first chunk starts the sums; later chunks add to them.
  if (inRange${r} && params.chunkStart == 0u) {
    for (var c = 0u; c < vectors; c++) { gradKey[keyBase${r} + c] = Row(); gradValue[keyBase${r} + c] = Row(); }
  }`,
    ),
    stage: shared.stage,
    // Rows past the chunk's end read its last row and weigh zero.
    // Key-major scratch: this key's (P, dS) for the block's query rows are consecutive, two rows per
    // vec4 (scoreRows is even and a block starts at an even row).
    loadScores: `${lines(block, (t) => `let live${t} = start + ${t}u < chunkEnd;`)}
    ${perRow(
      (
        r,
      ) => `let scoreBase${r} = ((head * params.keyLength + keyIndex${r}) * params.scoreRows + start - params.chunkStart) / 2u;
    ${lines(
      block / 2,
      (u) => `let stored${r}_${u} = scores[scoreBase${r} + ${u}u];
    let p${r}_${2 * u} = select(0.0, stored${r}_${u}.x, kept${r} & live${2 * u});
    let dS${r}_${2 * u} = select(0.0, stored${r}_${u}.y, kept${r} & live${2 * u});
    let p${r}_${2 * u + 1} = select(0.0, stored${r}_${u}.z, kept${r} & live${2 * u + 1});
    let dS${r}_${2 * u + 1} = select(0.0, stored${r}_${u}.w, kept${r} & live${2 * u + 1});`,
    )}`,
      "\n    ",
    )}`,
    loadQueriesGradOutputs: `${shared.loadsFor(["query", "gradOutput"])}
      ${lines(block, (t) => `let query${t} = ${shared.fetch("query", t)}; let gradOutput${t} = ${shared.fetch("gradOutput", t)};`, "\n      ")}`,
    accumulate: perRow(
      (
        r,
      ) => `let accumulatedKey${r} = gradKey[keyBase${r} + c] + ${sumOf(block, (t) => `dS${r}_${t} * query${t}`)};
      let accumulatedValue${r} = gradValue[keyBase${r} + c] + ${sumOf(block, (t) => `p${r}_${t} * gradOutput${t}`)};
      if (inRange${r}) {
        gradKey[keyBase${r} + c] = accumulatedKey${r};
        gradValue[keyBase${r} + c] = accumulatedValue${r};
      }`,
      "\n      ",
    ),
    finish: shared.finish,
  };
  return {
    backwardQueryChunk: fill(QUERY_CHUNK_WGSL, queryBlocks),
    backwardKeyValueChunk: fill(KEY_VALUE_CHUNK_WGSL, keyValueBlocks),
  };
}

/** A variant's five fused kernels: the templates of common.ts and the chunked-scores pair, filled. */
export const variantKernels = (spec: AttentionVariantSpec): AttentionKernels => ({
  ...attentionKernels(spec),
  ...chunkedScoresKernels(spec),
});
