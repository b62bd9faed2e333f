/**
 * Backward "chunked-gemm" (adapters with subgroups of >= 8 lanes: llvmpipe): the chunked-scores
 * backward's 10 D FLOPs per query-key pair, with the three weighted sums done as register-blocked
 * products instead of sums accumulated in the gradient rows.
 *
 * chunked-scores (chunked-scores.ts) adds `dS_ij k_j` into dQ_i, and `P_ij dO_i`, `dS_ij q_i` into dV_j
 * and dK_j, a block of 16 rows at a time, reading and writing the gradient rows once per block (the head
 * dimension is a uniform, so a whole row cannot live in registers). Here, per chunk of C query rows:
 * 1. `scores`: an invocation owns 4 consecutive key rows and takes the chunk's query rows 32 at a time
 *    (broadcast over the subgroup): s = q . k in one loop over the head dimension, dP = dO . v in a
 *    second (two loops: half the live registers of one, 10-20% faster on llvmpipe), then
 *    P_ij = exp(s_ij - lse_i) and dS_ij = scale P_ij (dP_ij - delta_i), stored as three planes:
 *    P and dS query-major [B * H, C', Lk'] (four keys per vec4) and dS key-major [B * H, Lk, C'] (four
 *    query rows per vec4), where C' is C rounded up to 32 and Lk' is Lk rounded up to 4. Padding rows
 *    and keys hold zeros.
 * 2. the products out (+)= A B for 4 consecutive output rows x 32 columns per invocation (8 vec4, one
 *    loaded per subgroup lane and broadcast), accumulated in registers over the whole inner dimension
 *    and written once: `gemmProduct` for dQ_i = sum_j dS_ij k_j (A = the key-major dS plane, over all
 *    Lk keys), `gemmProductPair` for dV_j += sum_i P_ij dO_i and dK_j += sum_i dS_ij q_i in one
 *    dispatch (A = the query-major planes, over the chunk; the first chunk starts the sums).
 *    Each plane is laid out so that the invocation's 4 output rows are one vec4 and neighbouring lanes
 *    read neighbouring vec4: one contiguous load per subgroup, no gather. This is matmul's
 *    cpu-subgroup core (4 x 32 outputs per invocation, the other operand broadcast) on buffers.
 * Memory: the three planes hold 12 bytes per query-key pair of a chunk (chunked-scores: 8), sized by
 * the same rows-per-chunk rule (index.ts), so linear in the sequence length.
 */

import { wgsl } from "../../runtime/kernel.ts";
import { SUBGROUP_LANES } from "./choose.ts";
import { CHUNK_PARAMS } from "./chunked-scores.ts";
import {
  ATTENTION_COMMON_WGSL,
  BACKWARD_INPUTS_WGSL,
  ENTRY_WGSL,
  eachRow,
  lines,
  MAX_ATTENTION_HEAD_DIM,
  ROWS_PER_WORKGROUP,
} from "./common.ts";

/** Output rows per invocation in every kernel (key rows in `scores`): one vec4 of a plane. */
export const GEMM_ROWS = 4;
/** Query rows broadcast per block in `scores`; the planes' row counts are a multiple of it. */
export const GEMM_SCORE_BLOCK = 32;
/** Column vectors (vec4) per invocation in `product`: one per subgroup lane. */
export const GEMM_COLUMN_VECTORS = SUBGROUP_LANES;

const COMPONENTS = ["x", "y", "z", "w"];
const perRow = (line: (r: number) => string, separator = "\n  ") => eachRow(GEMM_ROWS, line, separator);
const perT = (line: (t: number) => string, separator?: string) => lines(GEMM_SCORE_BLOCK, line, separator);
const columns = (line: (cv: number) => string, separator = " ") =>
  lines(GEMM_COLUMN_VECTORS, line, separator);
const groups = Array.from({ length: GEMM_SCORE_BLOCK / SUBGROUP_LANES }, (_, g) => g);
const broadcast = (name: string, t: number) =>
  `subgroupBroadcast(${name}${Math.floor(t / SUBGROUP_LANES)}, ${t % SUBGROUP_LANES}u)`;

/** Step 1: P and dS of the chunk's query rows for the invocation's 4 key rows, into the planes. */
const SCORES_WGSL = `enable subgroups;
${BACKWARD_INPUTS_WGSL}
// P then dS (at planeSize), query-major; dS key-major.
@group(0) @binding(6) var<storage, read_write> byQuery: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> gradScoresByKey: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> params: Params;
${ATTENTION_COMMON_WGSL}${ENTRY_WGSL}
  let queryRow0 = head * params.queryLength;
  let chunkEnd = min(params.queryLength, params.chunkStart + params.chunkRows);
  let keyVectors = (params.keyLength + 3u) / 4u; // vec4 per query-major plane row
  // Keys key0 .. key0 + 3; keys past the end compute the last key again with P = dS = 0.
  let key0 = (wid.x * ROWS + lane) * ${GEMM_ROWS}u;
  let groupInRange = key0 < params.keyLength;
  {{keyRows}}
  // Query rows past the chunk's end read its last row and get P = dS = 0.
  for (var start = params.chunkStart; start < chunkEnd; start += ${GEMM_SCORE_BLOCK}u) {
    {{stage}}
    {{declare}}
    for (var c = 0u; c < vectors; c++) {
      {{scoreLoads}}
      {{scores}}
    }
    for (var c = 0u; c < vectors; c++) {
      {{gradLoads}}
      {{gradProbabilities}}
    }
    {{gradScores}}
    let chunkRow = start - params.chunkStart;
    {{store}}
  }
}`;

/**
 * Step 2: out rows row0 .. row0 + 3 x column vectors column0 .. column0 + 7 (+)= sum_k A_k B_k, where
 * A_k is one vec4 of plane row k (the invocation's 4 output rows) and B_k row k of `rows`. The pair
 * kernel runs two such products in one dispatch (dV and dK: workgroups z >= columnGroups take the
 * second, whose plane starts planeJobStride vec4 later), so each chunk is 3 dispatches, not 4.
 */
const productTemplate = (jobs: number) => `enable subgroups;
@group(0) @binding(0) var<storage, read> plane: array<vec4<f32>>;
${Array.from(
  { length: jobs },
  (_, j) => `@group(0) @binding(${1 + 2 * j}) var<storage, read> rows${j}: array<Row>;
@group(0) @binding(${2 + 2 * j}) var<storage, read_write> out${j}: array<Row>;`,
).join("\n")}
struct Params {
  vectors: u32, inner: u32, planeStride: u32, planeHeadRows: u32, rowsHeadRows: u32, rowsOffset: u32,
  outHeadRows: u32, outOffset: u32, outRows: u32, accumulate: u32, columnGroups: u32, planeJobStride: u32,
}
@group(0) @binding(${1 + 2 * jobs}) var<uniform> params: Params;
alias Row = vec4<f32>;
const ROWS: u32 = {{rows}}u;
@compute @workgroup_size(ROWS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32, @builtin(subgroup_invocation_id) subgroupLane: u32) {
  let head = wid.y;
  let vectors = params.vectors;
  let job = wid.z / params.columnGroups;
  let row0 = (wid.x * ROWS + lane) * ${GEMM_ROWS}u;
  let planeColumn = job * params.planeJobStride + min(row0 / 4u, params.planeStride - 1u);
  let planeRow0 = head * params.planeHeadRows;
  let rowsRow0 = head * params.rowsHeadRows + params.rowsOffset;
  let column0 = (wid.z % params.columnGroups) * ${GEMM_COLUMN_VECTORS}u;
  let ownColumn = min(column0 + subgroupLane % ${GEMM_COLUMN_VECTORS}u, vectors - 1u);
  let outRow0 = head * params.outHeadRows + params.outOffset + row0;
  {{declare}}
  {{loops}}
  {{store}}
}`;

function scoresBlocks(): Record<string, string> {
  const [sLoads, gLoads] = [
    ["key", "query", "k", "q"],
    ["value", "gradOutput", "v", "dO"],
  ].map(
    ([own, shared, o, b]) => `${perRow((r) => `let ${o}${r} = ${own}[keyBase${r} + c];`, " ")}
      ${groups.map((g) => `let ${b}Own${g} = ${shared}[own${g} * vectors + c];`).join(" ")}`,
  );
  const accumulate = (o: string, b: string, acc: string) =>
    perT(
      (t) => `let ${b}${t} = ${broadcast(`${b}Own`, t)};
      ${perRow((r) => `${acc}${r}_${t} += dot(${o}${r}, ${b}${t});`, " ")}`,
      "\n      ",
    );
  return {
    keyRows: perRow(
      (r) => `let keyIndex${r} = min(key0 + ${r}u, params.keyLength - 1u);
  let keyRow${r} = head * params.keyLength + keyIndex${r};
  let keyBase${r} = keyRow${r} * vectors;
  let kept${r} = (key0 + ${r}u < params.keyLength) & keyKept(batch, keyIndex${r});`,
    ),
    stage: groups
      .map(
        (g) =>
          `let own${g} = queryRow0 + min(start + ${g * SUBGROUP_LANES}u + subgroupLane % ${SUBGROUP_LANES}u, chunkEnd - 1u);
    let statsOwn${g} = rowStats[own${g}];`,
      )
      .join("\n    "),
    declare: perRow((r) => perT((t) => `var s${r}_${t} = 0.0; var g${r}_${t} = 0.0;`, " "), "\n    "),
    scoreLoads: sLoads,
    scores: accumulate("k", "q", "s"),
    gradLoads: gLoads,
    gradProbabilities: accumulate("v", "dO", "g"),
    gradScores: `${perT(
      (t) => `let stats${t} = ${broadcast("statsOwn", t)};
    let live${t} = start + ${t}u < chunkEnd;`,
    )}
    ${perRow(
      (r) =>
        perT(
          (
            t,
          ) => `let p${r}_${t} = select(0.0, exp2(s${r}_${t} * params.scaleLog2 - stats${t}.x * LOG2E), kept${r} & live${t});
    let dS${r}_${t} = params.scale * p${r}_${t} * (g${r}_${t} - stats${t}.y);`,
        ),
      "\n    ",
    )}`,
    store: `if (groupInRange) {
      let plane = (head * params.scoreRows + chunkRow) * keyVectors + key0 / 4u;
      ${perT(
        (t) => `byQuery[plane + ${t}u * keyVectors] = vec4<f32>(${perRow((r) => `p${r}_${t}`, ", ")});
      byQuery[params.planeSize + plane + ${t}u * keyVectors] = vec4<f32>(${perRow((r) => `dS${r}_${t}`, ", ")});`,
        "\n      ",
      )}
    }
    ${perRow(
      (r) => `if (key0 + ${r}u < params.keyLength) {
      let byKey = (keyRow${r} * params.scoreRows + chunkRow) / 4u;
      ${lines(
        GEMM_SCORE_BLOCK / 4,
        (u) =>
          `gradScoresByKey[byKey + ${u}u] = vec4<f32>(${[0, 1, 2, 3].map((e) => `dS${r}_${4 * u + e}`).join(", ")});`,
        " ",
      )}
    }`,
      "\n    ",
    )}`,
  };
}

function productBlocks(jobs: number): Record<string, string> {
  const eachJob = (body: (j: number) => string) =>
    jobs === 1
      ? body(0)
      : Array.from({ length: jobs }, (_, j) => `if (job == ${j}u) {\n    ${body(j)}\n  }`).join(" else ");
  return {
    declare: `${perRow((r) => columns((cv) => `var acc${r}_${cv} = Row();`), "\n  ")}
  if (params.accumulate != 0u) {
    ${perRow(
      (r) =>
        `let from${r} = (head * params.outHeadRows + params.outOffset + min(row0 + ${r}u, params.outRows - 1u)) * vectors;`,
      "\n    ",
    )}
    ${eachJob((j) => perRow((r) => columns((cv) => `acc${r}_${cv} = out${j}[from${r} + min(column0 + ${cv}u, vectors - 1u)];`), "\n    "))}
  }`,
    loops: eachJob(
      (j) => `for (var k = 0u; k < params.inner; k++) {
    let a = plane[(planeRow0 + k) * params.planeStride + planeColumn];
    let own = rows${j}[(rowsRow0 + k) * vectors + ownColumn];
    ${columns(
      (cv) => `let b${cv} = subgroupBroadcast(own, ${cv}u);
    ${perRow((r) => `acc${r}_${cv} += a.${COMPONENTS[r]} * b${cv};`, " ")}`,
      "\n    ",
    )}
  }`,
    ),
    store: eachJob((j) =>
      perRow(
        (r) => `if (row0 + ${r}u < params.outRows) {
    ${columns((cv) => `if (column0 + ${cv}u < vectors) { out${j}[(outRow0 + ${r}u) * vectors + column0 + ${cv}u] = acc${r}_${cv}; }`, "\n    ")}
  }`,
      ),
    ),
  };
}

/** The chunked-gemm kernels, exactly as launched (`cxr kernels dump attention --pass gemmScores`...). */
export const CHUNKED_GEMM_KERNELS = {
  gemmScores: wgsl(SCORES_WGSL, {
    ...scoresBlocks(),
    extraParams: `${CHUNK_PARAMS} planeSize: u32,`,
    enable: "",
    laneBuiltin: ", @builtin(subgroup_invocation_id) subgroupLane: u32",
    maxVectors: MAX_ATTENTION_HEAD_DIM / 4,
    rows: ROWS_PER_WORKGROUP,
    sharedDeclarations: "",
  }),
  gemmProduct: wgsl(productTemplate(1), { ...productBlocks(1), rows: ROWS_PER_WORKGROUP }),
  gemmProductPair: wgsl(productTemplate(2), { ...productBlocks(2), rows: ROWS_PER_WORKGROUP }),
} as const;
