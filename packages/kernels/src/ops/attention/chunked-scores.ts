/**
 * Backward "chunked-scores": 10 D FLOPs per query-key pair instead of the recomputing backward's 14 D,
 * with memory still linear in the sequence length.
 *
 * The recomputing backward (common.ts) computes the scores s_ij = q_i . k_j and dP_ij = dO_i . v_j
 * twice: once per query row for dQ and once per key row for dK and dV, because WGSL has no float
 * atomics to let one pass scatter into the other's rows. Here the queries go in chunks of C rows:
 * 1. per query row of the chunk (the dQ kernel of the recomputing backward, plus one store): s, dP,
 *    P_ij = exp(s_ij - lse_i), dS_ij = scale P_ij (dP_ij - delta_i), dQ_i = sum_j dS_ij k_j, and
 *    (P_ij, dS_ij) written to a scratch buffer [B * H, C, Lk];
 * 2. per key row: dV_j += sum_i P_ij dO_i and dK_j += sum_i dS_ij q_i over the chunk's queries, reading
 *    P and dS back instead of recomputing them (4 D per pair instead of 8 D).
 * The scratch holds C x Lk pairs per head: C is chosen so it stays within a fixed budget (index.ts),
 * never below one workgroup of rows, so memory grows linearly with the length, not quadratically.
 * Both kernels take the variant's shared-block delivery (subgroup broadcast or workgroup tiles).
 */

import { wgsl } from "../../runtime/kernel.ts";
import {
  ATTENTION_BACKWARD_QUERY_WGSL,
  ATTENTION_COMMON_WGSL,
  type AttentionVariantSpec,
  kernelBlocks,
  lines,
  MAX_ATTENTION_HEAD_DIM,
  ROWS_PER_WORKGROUP,
  sumOf,
} from "./common.ts";

/** The chunk's first query row and its row count, after the common parameters. */
const CHUNK_PARAMS = " chunkStart: u32, chunkRows: u32,";

/** Step 1: the recomputing backward's dQ kernel over one chunk of query rows, storing (P, dS). */
const QUERY_CHUNK_WGSL = ATTENTION_BACKWARD_QUERY_WGSL.replace(
  "@group(0) @binding(7) var<uniform> params: Params;",
  `@group(0) @binding(7) var<storage, read_write> scores: array<vec2<f32>>;
@group(0) @binding(8) var<uniform> params: Params;`,
)
  .replace(
    "  let inRange = row < params.queryLength;",
    `  let chunkRow = row; // row within the chunk
  let chunkEnd = min(params.queryLength, params.chunkStart + params.chunkRows);
  let inRange = params.chunkStart + chunkRow < chunkEnd;`,
  )
  .replaceAll(
    "min(row, params.queryLength - 1u)",
    "min(params.chunkStart + chunkRow, params.queryLength - 1u)",
  )
  .replace(
    "    {{gradScores}}",
    `    {{gradScores}}
    let scoreBase = (head * params.chunkRows + chunkRow) * params.keyLength + start;
    {{storeScores}}`,
  );

/** Step 2: dK and dV over one chunk of query rows from the stored (P, dS). */
const KEY_VALUE_CHUNK_WGSL = `{{enable}}
@group(0) @binding(0) var<storage, read> query: array<Row>;
@group(0) @binding(1) var<storage, read> keyMask: array<f32>;
@group(0) @binding(2) var<storage, read> gradOutput: array<Row>;
@group(0) @binding(3) var<storage, read> scores: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> gradKey: array<Row>;
@group(0) @binding(5) var<storage, read_write> gradValue: array<Row>;
@group(0) @binding(6) var<uniform> params: Params;
${ATTENTION_COMMON_WGSL}
@compute @workgroup_size(ROWS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32{{laneBuiltin}}) {
  let head = wid.y;
  let batch = head / params.heads;
  let vectors = params.vectors;
  let row = wid.x * ROWS + lane;
  let inRange = row < params.keyLength;
  let keyIndex = min(row, params.keyLength - 1u);
  let keyBase = (head * params.keyLength + keyIndex) * vectors;
  let queryRow0 = head * params.queryLength;
  let chunkEnd = min(params.queryLength, params.chunkStart + params.chunkRows);
  // Step 1 stored zeros for dropped keys already; checking here keeps a dropped key's gradient exactly 0.
  let kept = keyKept(batch, keyIndex);
  // The first chunk starts the sums; later chunks add to them.
  if (inRange && params.chunkStart == 0u) {
    for (var c = 0u; c < vectors; c++) { gradKey[keyBase + c] = Row(); gradValue[keyBase + c] = Row(); }
  }
  for (var start = params.chunkStart; start < chunkEnd; start += {{block}}u) {
    {{stage}}
    {{loadScores}}
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

/** The two kernels of the chunked-scores backward for one shared-block delivery. */
export interface ChunkedScoresKernels {
  backwardQueryChunk: string;
  backwardKeyValueChunk: string;
}

export function chunkedScoresKernels(spec: AttentionVariantSpec): ChunkedScoresKernels {
  const { block, sharedBlock } = spec;
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
  // The dQ kernel's blocks, with P kept apart from dS so both can be stored.
  const queryBlocks = kernelBlocks("backwardQuery", block, sharedBlock);
  queryBlocks.gradScores = lines(
    block,
    (t) =>
      `let p${t} = select(0.0, exp2(total(s${t}) * params.scaleLog2 - logSumExp2), keyInBlock(start, ${t}u, batch));
    let dS${t} = params.scale * p${t} * (total(g${t}) - delta);`,
  );
  queryBlocks.storeScores = `if (inRange) {
      ${lines(block, (t) => `if (start + ${t}u < params.keyLength) { scores[scoreBase + ${t}u] = vec2<f32>(p${t}, dS${t}); }`, "\n      ")}
    }`;

  const shared = sharedBlock(["query", "gradOutput"], "queryRow0", "chunkEnd", block);
  const keyValueBlocks = {
    sharedDeclarations: shared.declarations,
    stage: shared.stage,
    // Rows past the chunk's end read its last row and weigh zero.
    loadScores: lines(
      block,
      (t) =>
        `let stored${t} = scores[(head * params.chunkRows + min(start + ${t}u, chunkEnd - 1u) - params.chunkStart) * params.keyLength + keyIndex];
    let p${t} = select(0.0, stored${t}.x, kept & (start + ${t}u < chunkEnd));
    let dS${t} = select(0.0, stored${t}.y, kept & (start + ${t}u < chunkEnd));`,
    ),
    loadQueriesGradOutputs: shared.loadsFor(["query", "gradOutput"]),
    weightedQueries: sumOf(block, (t) => `dS${t} * ${shared.fetch("query", t)}`),
    weightedGradOutputs: sumOf(block, (t) => `p${t} * ${shared.fetch("gradOutput", t)}`),
    finish: shared.finish,
  };
  return {
    backwardQueryChunk: fill(QUERY_CHUNK_WGSL, queryBlocks),
    backwardKeyValueChunk: fill(KEY_VALUE_CHUNK_WGSL, keyValueBlocks),
  };
}
