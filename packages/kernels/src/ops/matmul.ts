/**
 * Matrix multiplication: batched `[..., M, K] x [..., K, N]`, either operand read transposed in place
 * (no transpose copies: Linear is `x [rows, in]` times `W^T` with `W [out, in]`), and a fused epilogue
 * (bias over columns, then ReLU / SiLU / GELU). Backward for both operands and the bias.
 *
 * Three variants, chosen per adapter by `chooseMatmulVariant`:
 * - "cpu-register-blocked" (lavapipe/llvmpipe): operands are first packed into rgba32float textures
 *   (4 consecutive k per texel, zero past K; by the copy engine when rows are already k-contiguous),
 *   then each invocation keeps a 4 x 16 block of outputs in registers and reads operands only through
 *   `textureLoad`, 20 texel loads per 256 multiply-adds. No workgroup memory. On llvmpipe every load
 *   with a per-lane address is per-lane scalar code (PLATFORM.md), and texel fetches measured 1.2-1.6x
 *   cheaper than vec4 buffer loads of the same packed data.
 * - "gpu-tiled": 64x64 output tile per workgroup staged through workgroup memory, 4x4 per invocation.
 * - "naive": one output per invocation, reading both operands straight from their buffers.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import type { Gpu } from "../runtime/device.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { formatShape, OpError, type Shape, sizeOf, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";
import { UNARY_FUNCTIONS } from "./unary/index.ts";

export type MatmulActivation = "none" | "relu" | "silu" | "gelu";
export type MatmulVariant = "cpu-register-blocked" | "gpu-tiled" | "naive";

export const MATMUL_ACTIVATIONS: readonly MatmulActivation[] = ["none", "relu", "silu", "gelu"];
export const MATMUL_VARIANTS: readonly MatmulVariant[] = ["cpu-register-blocked", "gpu-tiled", "naive"];

export interface MatmulOptions {
  /** Read `a` as `[..., K, M]` and use its transpose. */
  transposeA?: boolean;
  /** Read `b` as `[..., N, K]` and use its transpose (Linear weights `[out, in]`). */
  transposeB?: boolean;
  /** Added to every row of the product: shape `[N]`. */
  bias?: Tensor | null;
  /** Applied after the bias. Default "none". */
  activation?: MatmulActivation;
  /** Force a variant (tests, benchmarks); default `chooseMatmulVariant`. */
  variant?: MatmulVariant;
}

/** The size of one matmul: `batch` independent `[M, K] x [K, N]` products. */
export interface MatmulShape {
  batch: number;
  M: number;
  N: number;
  K: number;
}

/** Operand shapes resolved: sizes, which operand carries the batch, and the output shape. */
export interface MatmulPlan extends MatmulShape {
  /** False when the operand has no batch (2-D or all batch dims 1) and is reused for every batch. */
  aBatched: boolean;
  bBatched: boolean;
  outputShape: Shape;
}

/** Checks operand shapes and works out the product's sizes; shared by the GPU op and the reference. */
export function resolveMatmulShapes(
  aShape: Shape,
  bShape: Shape,
  options: { transposeA?: boolean; transposeB?: boolean } = {},
): MatmulPlan {
  if (aShape.length < 2 || bShape.length < 2) {
    throw new OpError("matmul", "operands need at least 2 dimensions", { a: aShape, b: bShape });
  }
  const [aRows, aColumns] = aShape.slice(-2);
  const [bRows, bColumns] = bShape.slice(-2);
  const M = options.transposeA ? aColumns : aRows;
  const K = options.transposeA ? aRows : aColumns;
  const bDepth = options.transposeB ? bColumns : bRows;
  const N = options.transposeB ? bRows : bColumns;
  if (K !== bDepth) {
    throw new OpError(
      "matmul",
      `inner dimensions differ: a gives K=${K}${options.transposeA ? " (transposed)" : ""}, b gives K=${bDepth}${options.transposeB ? " (transposed)" : ""}`,
      { a: aShape, b: bShape },
    );
  }
  const aBatchShape = aShape.slice(0, -2);
  const bBatchShape = bShape.slice(0, -2);
  const aBatch = sizeOf(aBatchShape);
  const bBatch = sizeOf(bBatchShape);
  const rank = Math.max(aBatchShape.length, bBatchShape.length);
  const padded = (shape: Shape) => [...new Array<number>(rank - shape.length).fill(1), ...shape];
  const aPadded = padded(aBatchShape);
  const bPadded = padded(bBatchShape);
  const batchShape = aPadded.map((dim, index) => Math.max(dim, bPadded[index]));
  const matches = (shape: number[]) => shape.every((dim, index) => dim === batchShape[index]);
  if (aBatch > 1 && bBatch > 1 && !(matches(aPadded) && matches(bPadded))) {
    throw new OpError(
      "matmul",
      "batch dimensions differ; they broadcast only when one operand's batch is 1 or absent",
      { a: aShape, b: bShape },
    );
  }
  return {
    batch: sizeOf(batchShape),
    M,
    N,
    K,
    aBatched: aBatch > 1,
    bBatched: bBatch > 1,
    outputShape: [...batchShape, M, N],
  };
}

/** FLOPs (multiply-add = 2, plus the epilogue) and bytes read and written once each. */
export function matmulCost(
  shape: MatmulShape,
  options: { bias?: boolean; activation?: MatmulActivation; aBatched?: boolean; bBatched?: boolean } = {},
): { flops: number; bytes: number } {
  const { batch, M, N, K } = shape;
  const outputs = batch * M * N;
  const activation = options.activation ?? "none";
  const epilogue = (options.bias ? 1 : 0) + (activation === "none" ? 0 : UNARY_FUNCTIONS[activation].flops);
  const aElements = (options.aBatched === false ? 1 : batch) * M * K;
  const bElements = (options.bBatched === false ? 1 : batch) * K * N;
  return {
    flops: 2 * outputs * K + epilogue * outputs,
    bytes: 4 * (aElements + bElements + outputs + (options.bias ? N : 0)),
  };
}

// ---------------------------------------------------------------------------------------------
// Float64 reference
// ---------------------------------------------------------------------------------------------

export interface MatmulReferenceOptions {
  transposeA?: boolean;
  transposeB?: boolean;
  /** Length N. */
  bias?: Float64Array | null;
  activation?: MatmulActivation;
}

export interface MatmulReferenceGradients {
  a: Float64Array;
  b: Float64Array;
  /** Null when the forward had no bias. */
  bias: Float64Array | null;
}

/** Element offsets of operand (row, depth) / (depth, column) in row-major storage. */
interface OperandLayout {
  batchStride: number;
  /** Stride of the output-row index m (for a) or output-column index n (for b). */
  outerStride: number;
  /** Stride of the contraction index k. */
  depthStride: number;
}

function layoutOfA(shape: MatmulShape, batched: boolean, transposed: boolean): OperandLayout {
  return {
    batchStride: batched ? shape.M * shape.K : 0,
    outerStride: transposed ? 1 : shape.K,
    depthStride: transposed ? shape.M : 1,
  };
}

function layoutOfB(shape: MatmulShape, batched: boolean, transposed: boolean): OperandLayout {
  return {
    batchStride: batched ? shape.K * shape.N : 0,
    outerStride: transposed ? shape.K : 1,
    depthStride: transposed ? 1 : shape.N,
  };
}

function referenceActivation(activation: MatmulActivation) {
  if (activation === "none") return { value: (x: number) => x, derivative: () => 1 };
  const unary = UNARY_FUNCTIONS[activation];
  return {
    value: (x: number) => unary.reference(x, 1),
    derivative: (x: number) => unary.referenceDerivative(x, 1),
  };
}

function checkReferenceInputs(
  a: Float64Array,
  aShape: Shape,
  b: Float64Array,
  bShape: Shape,
  options: MatmulReferenceOptions,
): MatmulPlan {
  const plan = resolveMatmulShapes(aShape, bShape, options);
  if (a.length !== sizeOf(aShape) || b.length !== sizeOf(bShape)) {
    throw new OpError("matmulReference", `data sizes ${a.length} and ${b.length} do not match the shapes`, {
      a: aShape,
      b: bShape,
    });
  }
  if (options.bias && options.bias.length !== plan.N) {
    throw new OpError("matmulReference", `bias has ${options.bias.length} values, expected N=${plan.N}`, {
      a: aShape,
      b: bShape,
    });
  }
  return plan;
}

/** Pre-activation values z = op(a) op(b) + bias, row-major in the output shape. */
function referencePreActivation(
  a: Float64Array,
  aShape: Shape,
  b: Float64Array,
  bShape: Shape,
  options: MatmulReferenceOptions,
): { plan: MatmulPlan; z: Float64Array } {
  const plan = checkReferenceInputs(a, aShape, b, bShape, options);
  const { batch, M, N, K } = plan;
  const la = layoutOfA(plan, plan.aBatched, options.transposeA ?? false);
  const lb = layoutOfB(plan, plan.bBatched, options.transposeB ?? false);
  const z = new Float64Array(batch * M * N);
  for (let p = 0; p < batch; p++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let sum = options.bias ? options.bias[n] : 0;
        const aBase = p * la.batchStride + m * la.outerStride;
        const bBase = p * lb.batchStride + n * lb.outerStride;
        for (let k = 0; k < K; k++) sum += a[aBase + k * la.depthStride] * b[bBase + k * lb.depthStride];
        z[(p * M + m) * N + n] = sum;
      }
    }
  }
  return { plan, z };
}

/** Float64 CPU reference of `matmul`, forward and backward, on row-major data. Reusable by other ops. */
export const matmulReference = {
  outputShape(aShape: Shape, bShape: Shape, options: MatmulReferenceOptions = {}): Shape {
    return resolveMatmulShapes(aShape, bShape, options).outputShape;
  },

  forward(
    a: Float64Array,
    aShape: Shape,
    b: Float64Array,
    bShape: Shape,
    options: MatmulReferenceOptions = {},
  ): Float64Array {
    const { z } = referencePreActivation(a, aShape, b, bShape, options);
    const activation = referenceActivation(options.activation ?? "none");
    return z.map(activation.value);
  },

  /** Gradients of sum(gradOutput * forward(...)) with respect to a, b and the bias. */
  backward(
    a: Float64Array,
    aShape: Shape,
    b: Float64Array,
    bShape: Shape,
    gradOutput: Float64Array,
    options: MatmulReferenceOptions = {},
  ): MatmulReferenceGradients {
    const { plan, z } = referencePreActivation(a, aShape, b, bShape, options);
    if (gradOutput.length !== z.length) {
      throw new OpError(
        "matmulReference",
        `gradOutput has ${gradOutput.length} values, expected ${z.length}`,
        {
          output: plan.outputShape,
        },
      );
    }
    const { batch, M, N, K } = plan;
    const activation = referenceActivation(options.activation ?? "none");
    const gradZ = z.map((value, index) => gradOutput[index] * activation.derivative(value));
    const la = layoutOfA(plan, plan.aBatched, options.transposeA ?? false);
    const lb = layoutOfB(plan, plan.bBatched, options.transposeB ?? false);
    const gradA = new Float64Array(a.length);
    const gradB = new Float64Array(b.length);
    const gradBias = options.bias ? new Float64Array(N) : null;
    for (let p = 0; p < batch; p++) {
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          const g = gradZ[(p * M + m) * N + n];
          if (gradBias) gradBias[n] += g;
          const aBase = p * la.batchStride + m * la.outerStride;
          const bBase = p * lb.batchStride + n * lb.outerStride;
          for (let k = 0; k < K; k++) {
            gradA[aBase + k * la.depthStride] += g * b[bBase + k * lb.depthStride];
            gradB[bBase + k * lb.depthStride] += g * a[aBase + k * la.depthStride];
          }
        }
      }
    }
    return { a: gradA, b: gradB, bias: gradBias };
  },
};

// ---------------------------------------------------------------------------------------------
// WGSL
// ---------------------------------------------------------------------------------------------

const ACTIVATION_CODES: Record<MatmulActivation, number> = { none: 0, relu: 1, silu: 2, gelu: 3 };

/** Activation functions shared by the epilogue and the activation backward (erf: Abramowitz-Stegun 7.1.26). */
const ACTIVATION_WGSL = `
fn sigmoidOf(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }
fn erfOf(x: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - poly * exp(-x * x));
}
fn activate(x: f32, activation: u32) -> f32 {
  switch activation {
    case 1u: { return max(x, 0.0); }
    case 2u: { return x * sigmoidOf(x); }
    case 3u: { return 0.5 * x * (1.0 + erfOf(x * 0.70710678118654752)); }
    default: { return x; }
  }
}
fn activationDerivative(x: f32, activation: u32) -> f32 {
  switch activation {
    case 1u: { return select(0.0, 1.0, x > 0.0); }
    case 2u: { let s = sigmoidOf(x); return s * (1.0 + x * (1.0 - s)); }
    case 3u: { return 0.5 * (1.0 + erfOf(x * 0.70710678118654752)) + x * 0.39894228040143268 * exp(-0.5 * x * x); }
    default: { return 1.0; }
  }
}`;

/**
 * Bindings 2..5 and the output step, identical in every matmul kernel. Each kernel's Params struct
 * starts with the four epilogue fields N, hasBias, activation, storePreActivation.
 */
const EPILOGUE_WGSL = `
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
@group(0) @binding(4) var<storage, read_write> preActivation: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;
${ACTIVATION_WGSL}
// One output element: add the bias, keep the pre-activation when backward needs it, activate.
fn storeOutput(index: u32, biasIndex: u32, sum: f32) {
  var value = sum;
  if (params.hasBias != 0u) { value += bias[biasIndex]; }
  if (params.storePreActivation != 0u) { preActivation[index] = value; }
  output[index] = activate(value, params.activation);
}`;

/** Where each operand element lives: offset = batch * batchStride + outer * outerStride + k * depthStride. */
const STRIDED_PARAMS_WGSL = `
struct Params {
  N: u32, hasBias: u32, activation: u32, storePreActivation: u32,
  batch: u32, M: u32, K: u32,
  aBatchStride: u32, aRowStride: u32, aDepthStride: u32,
  bBatchStride: u32, bColumnStride: u32, bDepthStride: u32,
}
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;`;

/** One output per invocation: the benchmark reference and the simplest correct kernel. */
export const MATMUL_NAIVE_WGSL = `
${STRIDED_PARAMS_WGSL}
${EPILOGUE_WGSL}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.batch * params.M * params.N) { return; }
  let column = index % params.N;
  let rowOfAll = index / params.N;
  let row = rowOfAll % params.M;
  let batch = rowOfAll / params.M;
  var aIndex = batch * params.aBatchStride + row * params.aRowStride;
  var bIndex = batch * params.bBatchStride + column * params.bColumnStride;
  var sum = 0.0;
  for (var k = 0u; k < params.K; k++) {
    sum += a[aIndex] * b[bIndex];
    aIndex += params.aDepthStride;
    bIndex += params.bDepthStride;
  }
  storeOutput(index, column, sum);
}`;

/**
 * Classic GPU tiling: a workgroup of 16x16 invocations owns a 64x64 output tile; each k-step of 16
 * stages a 64x16 slice of A and a 16x64 slice of B in workgroup memory; each invocation accumulates
 * 4x4 outputs at stride 16, so neighbouring invocations touch neighbouring addresses.
 */
export const MATMUL_GPU_TILED_WGSL = `
${STRIDED_PARAMS_WGSL}
${EPILOGUE_WGSL}
const TILE = 64u;
const DEPTH = 16u;
var<workgroup> tileA: array<array<f32, 64>, 16>;
var<workgroup> tileB: array<array<f32, 64>, 16>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  let tilesN = (params.N + TILE - 1u) / TILE;
  let tilesM = (params.M + TILE - 1u) / TILE;
  let tile = wid.x + wid.y * groups.x;
  if (tile >= params.batch * tilesM * tilesN) { return; }
  let tileColumn = (tile % tilesN) * TILE;
  let tileRow = ((tile / tilesN) % tilesM) * TILE;
  let batch = tile / (tilesN * tilesM);
  let aBase = batch * params.aBatchStride;
  let bBase = batch * params.bBatchStride;
  let laneColumn = lane % 16u;
  let laneRow = lane / 16u;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < params.K; k0 += DEPTH) {
    for (var step = 0u; step < 4u; step++) {
      let element = lane + step * 256u;
      let outer = element % TILE;
      let depth = element / TILE;
      let k = k0 + depth;
      var aValue = 0.0;
      if (tileRow + outer < params.M && k < params.K) {
        aValue = a[aBase + (tileRow + outer) * params.aRowStride + k * params.aDepthStride];
      }
      tileA[depth][outer] = aValue;
      var bValue = 0.0;
      if (tileColumn + outer < params.N && k < params.K) {
        bValue = b[bBase + (tileColumn + outer) * params.bColumnStride + k * params.bDepthStride];
      }
      tileB[depth][outer] = bValue;
    }
    workgroupBarrier();
    for (var depth = 0u; depth < DEPTH; depth++) {
      let bValues = vec4<f32>(tileB[depth][laneColumn], tileB[depth][laneColumn + 16u],
                              tileB[depth][laneColumn + 32u], tileB[depth][laneColumn + 48u]);
      for (var i = 0u; i < 4u; i++) { acc[i] += tileA[depth][laneRow + 16u * i] * bValues; }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let row = tileRow + laneRow + 16u * i;
    for (var j = 0u; j < 4u; j++) {
      let column = tileColumn + laneColumn + 16u * j;
      if (row < params.M && column < params.N) {
        storeOutput((batch * params.M + row) * params.N + column, column, acc[i][j]);
      }
    }
  }
}`;

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
struct Params {
  N: u32, hasBias: u32, activation: u32, storePreActivation: u32,
  batch: u32, rows: u32, columns: u32, depthTexels: u32, rowGroups: u32, columnBlocks: u32,
  aBatchRows: u32, bBatchRows: u32, layerShift: u32,
  outputBatchStride: u32, outputRowStride: u32, outputColumnStride: u32, swapped: u32,
}
@group(0) @binding(0) var packedA: texture_2d_array<f32>;
@group(0) @binding(1) var packedB: texture_2d_array<f32>;
${EPILOGUE_WGSL}
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

/** gradZ = gradOutput * activation'(z); for ReLU, z may be the output itself (same sign). */
export const MATMUL_ACTIVATION_BACKWARD_WGSL = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read> preActivation: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradPreActivation: array<f32>;
struct Params { size: u32, activation: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${ACTIVATION_WGSL}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  gradPreActivation[index] = gradOutput[index] * activationDerivative(preActivation[index], params.activation);
}`;

/** output[j] = sum over r of input[r * size + j]: the bias gradient and gradients of broadcast operands. */
export const MATMUL_SUM_ROWS_WGSL = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params { rows: u32, size: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  var sum = 0.0;
  for (var row = 0u; row < params.rows; row++) { sum += input[row * params.size + index]; }
  output[index] = sum;
}`;

/** Register block of the CPU variant: outputs per invocation and invocations per workgroup. */
export const MATMUL_CPU_TILE = { rows: 4, columns: 16, workgroupSize: 16 } as const;

const CPU_SOURCE = wgsl(MATMUL_CPU_WGSL, {
  rows: MATMUL_CPU_TILE.rows,
  columnVectors: MATMUL_CPU_TILE.columns / 4,
  workgroupSize: MATMUL_CPU_TILE.workgroupSize,
});

// ---------------------------------------------------------------------------------------------
// Problems, scratch resources and dispatch
// ---------------------------------------------------------------------------------------------

/** One operand as the kernels see it: a buffer and element strides. */
interface Operand {
  tensor: Tensor;
  /** Stored transposed ([K, M] for a, [N, K] for b). */
  transposed: boolean;
  batched: boolean;
}

/** A fully resolved product: sizes plus the operand layouts, after folding batches where possible. */
interface MatmulProblem extends MatmulShape {
  a: Operand;
  b: Operand;
}

/**
 * Builds a problem. When only `a` carries the batch and is not transposed, `[batch, M, K]` rows are
 * contiguous, so the batch folds into M: one larger product instead of `batch` small ones (and the
 * gradient of the shared `b` becomes one product over batch * M, with no reduction pass).
 */
function makeProblem(shape: MatmulShape, a: Operand, b: Operand): MatmulProblem {
  if (shape.batch > 1 && a.batched && !b.batched && !a.transposed) {
    return { batch: 1, M: shape.batch * shape.M, N: shape.N, K: shape.K, a: { ...a, batched: false }, b };
  }
  return { ...shape, a, b };
}

const stridesOfA = (problem: MatmulProblem) => layoutOfA(problem, problem.a.batched, problem.a.transposed);
const stridesOfB = (problem: MatmulProblem) => layoutOfB(problem, problem.b.batched, problem.b.transposed);

interface Epilogue {
  bias: Tensor | null;
  activation: MatmulActivation;
  /** Where to keep z = product + bias for backward; null when not needed. */
  preActivation: Tensor | null;
}

/** Limits of the CPU variant's texture pool. */
export const MATMUL_SCRATCH = {
  /** Idle packing textures kept for reuse beyond this many bytes are destroyed, least recent first. */
  idleBytesLimit: 512 * 2 ** 20,
} as const;

interface PackedTexture {
  texture: GPUTexture;
  view: GPUTextureView;
  /** Size class: texels per row, rows per layer, layers. */
  key: string;
  width: number;
  height: number;
  layers: number;
  bytes: number;
  lastUse: number;
}

interface Scratch {
  /** Stand-ins bound when there is no bias / no pre-activation to keep (every binding must be bound). */
  noBias: Tensor;
  noPreActivation: Tensor;
  /** Idle packing textures by size class, like the buffer pool: reusable as soon as released. */
  idle: Map<string, PackedTexture[]>;
  idleBytes: number;
  clock: number;
}

const scratchByGpu = new WeakMap<Gpu, Scratch>();

function scratchOf(gpu: Gpu): Scratch {
  let scratch = scratchByGpu.get(gpu);
  if (!scratch) {
    scratch = {
      // retain(): these outlive any tidy() scope that happens to create them.
      noBias: Tensor.zeros(gpu, [4]).retain(),
      noPreActivation: Tensor.empty(gpu, [4]).retain(),
      idle: new Map(),
      idleBytes: 0,
      clock: 0,
    };
    scratchByGpu.set(gpu, scratch);
  }
  return scratch;
}

/** Frees the CPU variant's idle packing textures and stand-in buffers (e.g. between training and sampling). */
export function releaseMatmulScratch(gpu: Gpu): void {
  const scratch = scratchByGpu.get(gpu);
  if (!scratch) return;
  gpu.flush(); // recorded dispatches may still reference the textures
  for (const list of scratch.idle.values()) for (const packed of list) packed.texture.destroy();
  scratch.noBias.release();
  scratch.noPreActivation.release();
  scratchByGpu.delete(gpu);
}

/**
 * A texture for `rows` packed rows of `width` texels, from the pool or new. Like pooled buffers it
 * may be handed out again as soon as it is released: later writes are queued after earlier reads.
 */
function acquirePacked(gpu: Gpu, width: number, rows: number): PackedTexture {
  const scratch = scratchOf(gpu);
  const layerHeight = 2 ** layerShiftOf(gpu);
  const classWidth = Math.min(Math.ceil(width / 16) * 16, gpu.limits.maxTextureDimension2D);
  const layers = Math.ceil(rows / layerHeight);
  const height = layers > 1 ? layerHeight : Math.min(Math.ceil(rows / 256) * 256, layerHeight);
  const key = `${classWidth}x${height}x${layers}`;
  const reused = scratch.idle.get(key)?.pop();
  if (reused) {
    scratch.idleBytes -= reused.bytes;
    return reused;
  }
  const texture = gpu.device.createTexture({
    label: `matmul packed ${key}`,
    size: [classWidth, height, layers],
    format: "rgba32float",
    usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
  });
  // A 2d-array view even for one layer: the kernels declare texture_2d_array.
  const view = texture.createView({ dimension: "2d-array" });
  return {
    texture,
    view,
    key,
    width: classWidth,
    height,
    layers,
    bytes: 16 * classWidth * height * layers,
    lastUse: 0,
  };
}

function releasePacked(gpu: Gpu, packed: PackedTexture): void {
  const scratch = scratchOf(gpu);
  packed.lastUse = ++scratch.clock;
  let list = scratch.idle.get(packed.key);
  if (!list) scratch.idle.set(packed.key, (list = []));
  list.push(packed);
  scratch.idleBytes += packed.bytes;
  if (scratch.idleBytes <= MATMUL_SCRATCH.idleBytesLimit) return;
  gpu.flush(); // the textures about to go may be referenced by recorded dispatches
  const byAge = [...scratch.idle.values()].flat().sort((x, y) => x.lastUse - y.lastUse);
  for (const oldest of byAge) {
    if (scratch.idleBytes <= MATMUL_SCRATCH.idleBytesLimit) break;
    const siblings = scratch.idle.get(oldest.key) ?? [];
    siblings.splice(siblings.indexOf(oldest), 1);
    scratch.idleBytes -= oldest.bytes;
    oldest.texture.destroy();
  }
}

/**
 * Packed row r sits in layer r >> layerShift: layers are a power of two rows tall (the largest that
 * the adapter allows), so kernels find the layer with a shift instead of an integer division. A
 * one-layer texture is only as tall as it needs to be.
 */
function layerShiftOf(gpu: Gpu): number {
  return Math.floor(Math.log2(gpu.limits.maxTextureDimension2D));
}

/** Why `rows` packed rows of `width` texels do not fit in a texture array, or null when they do. */
function packingLimit(gpu: Gpu, width: number, rows: number, batches: number): string | null {
  const maxDimension = gpu.limits.maxTextureDimension2D;
  if (width > maxDimension) {
    return `K=${width * 4} needs ${width} texels per packed row, more than the adapter's ${maxDimension}`;
  }
  const layers = Math.ceil(rows / 2 ** layerShiftOf(gpu));
  if (layers > gpu.limits.maxTextureArrayLayers) {
    return `${rows} packed rows need ${layers} texture layers, more than the adapter's ${gpu.limits.maxTextureArrayLayers}`;
  }
  if (batches > gpu.limits.maxComputeWorkgroupsPerDimension) {
    return `${batches} batches exceed the adapter's ${gpu.limits.maxComputeWorkgroupsPerDimension} workgroups per dimension`;
  }
  return null;
}

/** How the CPU variant lays out a problem: which operand gives the kernel's rows, padded sizes. */
interface CpuLayout {
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

function cpuLayout(problem: MatmulShape & { aBatched: boolean; bBatched: boolean }): CpuLayout {
  const { rows: blockRows, columns: blockColumns, workgroupSize } = MATMUL_CPU_TILE;
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
function cpuVariantLimit(
  gpu: Gpu,
  problem: MatmulShape & { aBatched: boolean; bBatched: boolean },
): string | null {
  const layout = cpuLayout(problem);
  const batches = problem.batch;
  return (
    packingLimit(gpu, layout.width, (layout.rowsBatched ? batches : 1) * layout.paddedRows, batches) ??
    packingLimit(gpu, layout.width, (layout.columnsBatched ? batches : 1) * layout.paddedColumns, batches)
  );
}

/**
 * Products with this few rows or columns are matrix-vector work: each output of the naive kernel
 * already reads its row and column once, and packing would cost more than it saves (measured on
 * lavapipe: 1x1280x320 and 2x1000x1024 run 1.4-3x faster naive; from 8 rows on packing wins by
 * 2.7x or more).
 */
const CPU_NAIVE_MAX_ROWS = 4;

/**
 * The variant for this adapter and size: on a CPU adapter, textures and register blocks (the naive
 * kernel for matrix-vector shapes, the tiled kernel for operands too large to pack); on a GPU,
 * workgroup-memory tiles.
 */
export function chooseMatmulVariant(
  gpu: Gpu,
  shape: MatmulShape & { aBatched?: boolean; bBatched?: boolean },
): MatmulVariant {
  if (gpu.kind !== "cpu") return "gpu-tiled";
  if (Math.min(shape.M, shape.N) <= CPU_NAIVE_MAX_ROWS) return "naive";
  const packing = { ...shape, aBatched: shape.aBatched ?? true, bBatched: shape.bBatched ?? true };
  return cpuVariantLimit(gpu, packing) === null ? "cpu-register-blocked" : "gpu-tiled";
}

/** The forced variant, else the chooser's pick for this (possibly folded) problem. */
function variantFor(problem: MatmulProblem, forced: MatmulVariant | undefined): MatmulVariant {
  return (
    forced ??
    chooseMatmulVariant(problem.a.tensor.gpu, {
      ...problem,
      aBatched: problem.a.batched,
      bBatched: problem.b.batched,
    })
  );
}

function epilogueParams(problem: MatmulShape, epilogue: Epilogue): Params {
  return new Params().u32(
    problem.N,
    epilogue.bias ? 1 : 0,
    ACTIVATION_CODES[epilogue.activation],
    epilogue.preActivation ? 1 : 0,
  );
}

function epilogueBindings(gpu: Gpu, output: Tensor, epilogue: Epilogue): Tensor[] {
  const scratch = scratchOf(gpu);
  return [epilogue.bias ?? scratch.noBias, output, epilogue.preActivation ?? scratch.noPreActivation];
}

function problemCost(problem: MatmulProblem, epilogue: Epilogue) {
  return matmulCost(problem, {
    bias: epilogue.bias !== null,
    activation: epilogue.activation,
    aBatched: problem.a.batched,
    bBatched: problem.b.batched,
  });
}

function dispatchStrided(
  variant: "naive" | "gpu-tiled",
  problem: MatmulProblem,
  output: Tensor,
  epilogue: Epilogue,
): void {
  const gpu = output.gpu;
  const la = stridesOfA(problem);
  const lb = stridesOfB(problem);
  const params = epilogueParams(problem, epilogue).u32(
    problem.batch,
    problem.M,
    problem.K,
    la.batchStride,
    la.outerStride,
    la.depthStride,
    lb.batchStride,
    lb.outerStride,
    lb.depthStride,
  );
  const tiles = problem.batch * Math.ceil(problem.M / 64) * Math.ceil(problem.N / 64);
  launch(
    gpu,
    { name: "matmul", variant, code: variant === "naive" ? MATMUL_NAIVE_WGSL : MATMUL_GPU_TILED_WGSL },
    {
      bindings: [problem.a.tensor, problem.b.tensor, ...epilogueBindings(gpu, output, epilogue)],
      params,
      workgroups:
        variant === "naive" ? grid(problem.batch * problem.M * problem.N, 256) : grid(tiles * 256, 256),
      ...problemCost(problem, epilogue),
    },
  );
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
  const layerHeight = 2 ** layerShiftOf(gpu);
  const encoder = gpu.commandEncoder();
  for (let batch = 0; batch < operand.batches; batch++) {
    let packedRow = batch * operand.rowsPerBatch;
    let sourceRow = 0;
    while (sourceRow < operand.rows) {
      const y = packedRow % layerHeight;
      const count = Math.min(operand.rows - sourceRow, layerHeight - y);
      const offset = 4 * (batch * operand.strides.batchStride + sourceRow * operand.depth);
      encoder.copyBufferToTexture(
        { buffer: operand.tensor.buffer, offset, bytesPerRow: 4 * operand.depth, rowsPerImage: count },
        { texture: target.texture, origin: [0, y, Math.floor(packedRow / layerHeight)] },
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
          layerShiftOf(gpu),
          rowOffset,
        ),
        workgroups: [Math.ceil(width / 16), Math.ceil(rows / 16), operand.batches],
        flops: 0,
        bytes: 4 * operand.batches * rows * operand.depth + 16 * operand.batches * rows * width,
      },
    );
  }
}

function dispatchCpu(problem: MatmulProblem, output: Tensor, epilogue: Epilogue): void {
  const gpu = output.gpu;
  const geometry = { ...problem, aBatched: problem.a.batched, bBatched: problem.b.batched };
  const limit = cpuVariantLimit(gpu, geometry);
  if (limit) {
    throw new OpError("matmul", `variant cpu-register-blocked cannot pack these operands: ${limit}`, {
      a: problem.a.tensor,
      b: problem.b.tensor,
    });
  }
  const layout = cpuLayout(geometry);
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
  const rowGroups = Math.ceil(layout.rows / (MATMUL_CPU_TILE.rows * MATMUL_CPU_TILE.workgroupSize));
  const columnBlocks = layout.paddedColumns / MATMUL_CPU_TILE.columns;
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
    layerShiftOf(gpu),
    problem.M * problem.N,
    layout.swapped ? 1 : problem.N,
    layout.swapped ? problem.N : 1,
    layout.swapped ? 1 : 0,
  );
  launch(
    gpu,
    { name: "matmul", variant: "cpu-register-blocked", code: CPU_SOURCE },
    {
      bindings: [packedA.view, packedB.view, ...epilogueBindings(gpu, output, epilogue)],
      params,
      workgroups: grid(groups * MATMUL_CPU_TILE.workgroupSize, MATMUL_CPU_TILE.workgroupSize),
      ...problemCost(problem, epilogue),
    },
  );
  releasePacked(gpu, packedA);
  releasePacked(gpu, packedB);
}

function dispatch(
  forced: MatmulVariant | undefined,
  problem: MatmulProblem,
  output: Tensor,
  epilogue: Epilogue,
): void {
  const variant = variantFor(problem, forced);
  if (variant === "cpu-register-blocked") dispatchCpu(problem, output, epilogue);
  else dispatchStrided(variant, problem, output, epilogue);
}

function sumRows(input: Tensor, rows: number, shape: Shape): Tensor {
  const size = sizeOf(shape);
  const output = Tensor.empty(input.gpu, shape);
  launch(
    input.gpu,
    { name: "matmulSumRows", code: MATMUL_SUM_ROWS_WGSL },
    {
      bindings: [input, output],
      params: new Params().u32(rows, size),
      workgroups: grid(size, 256),
      flops: rows * size,
      bytes: 4 * (rows * size + size),
    },
  );
  return output;
}

function activationBackward(gradOutput: Tensor, preActivation: Tensor, activation: MatmulActivation): Tensor {
  const gradZ = Tensor.empty(gradOutput.gpu, gradOutput.shape);
  launch(
    gradOutput.gpu,
    { name: "matmulActivationBackward", code: MATMUL_ACTIVATION_BACKWARD_WGSL },
    {
      bindings: [gradOutput, preActivation, gradZ],
      params: new Params().u32(gradOutput.size, ACTIVATION_CODES[activation]),
      workgroups: grid(gradOutput.size, 256),
      flops: (UNARY_FUNCTIONS[activation as Exclude<MatmulActivation, "none">].flops + 1) * gradOutput.size,
      bytes: 12 * gradOutput.size,
    },
  );
  return gradZ;
}

const NO_EPILOGUE: Epilogue = { bias: null, activation: "none", preActivation: null };

/**
 * Runs `problem` into a new tensor of `shape`. With `reduce` (the gradient of an operand shared by
 * every batch), the per-batch products are summed into `shape`.
 */
function productInto(
  variant: MatmulVariant | undefined,
  problem: MatmulProblem,
  shape: Shape,
  reduce: boolean,
): Tensor {
  const gpu = problem.a.tensor.gpu;
  if (!reduce || problem.batch === 1) {
    const result = Tensor.empty(gpu, shape);
    dispatch(variant, problem, result, NO_EPILOGUE);
    return result;
  }
  const perBatch = Tensor.empty(gpu, [problem.batch, problem.M * problem.N]);
  dispatch(variant, problem, perBatch, NO_EPILOGUE);
  const result = sumRows(perBatch, problem.batch, shape);
  perBatch.release();
  return result;
}

/**
 * Gradients of a forward `problem` (already folded): for C = op(A) op(B),
 * dA = dC op(B)^T (stored transposed when A was), dB = op(A)^T dC (likewise).
 */
function matmulBackward(
  variant: MatmulVariant | undefined,
  problem: MatmulProblem,
  gradZ: Tensor,
  a: Tensor,
  b: Tensor,
  bias: Tensor | null,
): (Tensor | null)[] {
  const { batch, M, N, K } = problem;
  const tA = problem.a.transposed;
  const tB = problem.b.transposed;
  const gradOperand: Operand = { tensor: gradZ, transposed: false, batched: batch > 1 };
  let gradA: Tensor | null = null;
  let gradB: Tensor | null = null;
  if (a.requiresGrad) {
    const bOperand = { ...problem.b, transposed: !tB };
    const gradProblem = tA
      ? makeProblem(
          { batch, M: K, N: M, K: N },
          { ...problem.b, transposed: tB },
          { ...gradOperand, transposed: true },
        )
      : makeProblem({ batch, M, N: K, K: N }, gradOperand, bOperand);
    gradA = productInto(variant, gradProblem, a.shape, !problem.a.batched);
  }
  if (b.requiresGrad) {
    const gradProblem = tB
      ? makeProblem(
          { batch, M: N, N: K, K: M },
          { ...gradOperand, transposed: true },
          { ...problem.a, transposed: tA },
        )
      : makeProblem({ batch, M: K, N, K: M }, { ...problem.a, transposed: !tA }, gradOperand);
    gradB = productInto(variant, gradProblem, b.shape, !problem.b.batched);
  }
  const gradBias = bias?.requiresGrad ? sumRows(gradZ, batch * M, bias.shape) : null;
  return bias ? [gradA, gradB, gradBias] : [gradA, gradB];
}

function validate(a: Tensor, b: Tensor, options: MatmulOptions): MatmulPlan {
  const activation = options.activation ?? "none";
  if (!MATMUL_ACTIVATIONS.includes(activation)) {
    throw new OpError("matmul", `unknown activation "${activation}" (use ${MATMUL_ACTIVATIONS.join(", ")})`, {
      a,
      b,
    });
  }
  if (options.variant !== undefined && !MATMUL_VARIANTS.includes(options.variant)) {
    throw new OpError("matmul", `unknown variant "${options.variant}" (use ${MATMUL_VARIANTS.join(", ")})`, {
      a,
      b,
    });
  }
  const bias = options.bias ?? null;
  for (const [name, tensor] of [
    ["a", a],
    ["b", b],
    ["bias", bias],
  ] as const) {
    if (tensor && tensor.dtype !== "f32") {
      throw new OpError("matmul", `needs f32 operands, got ${tensor.dtype} for ${name}`, { a, b });
    }
    if (tensor && tensor.gpu !== a.gpu) {
      throw new OpError("matmul", `${name} lives on another device than a`, { a, b });
    }
  }
  const plan = resolveMatmulShapes(a.shape, b.shape, options);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== plan.N)) {
    throw new OpError("matmul", `bias must have shape [${plan.N}] (N), got ${formatShape(bias.shape)}`, {
      a,
      b,
      bias,
    });
  }
  const outputBytes = 4 * sizeOf(plan.outputShape);
  const limit = Math.min(a.gpu.limits.maxStorageBufferBindingSize, a.gpu.limits.maxBufferSize);
  if (outputBytes > limit) {
    throw new OpError(
      "matmul",
      `output ${formatShape(plan.outputShape)} needs ${outputBytes} bytes, more than the adapter's largest storage buffer (${limit} bytes)`,
      { a, b },
    );
  }
  return plan;
}

/**
 * C = activation(op(a) op(b) + bias), op = transpose where asked. `a: [..., M, K]` (or `[..., K, M]`),
 * `b: [..., K, N]` (or `[..., N, K]`); batch dims must match unless one side's batch is 1 or absent.
 * Returns `[...batch, M, N]`. Records backward for a, b and bias when any needs a gradient.
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const plan = validate(a, b, options);
  const gpu = a.gpu;
  const bias = options.bias ?? null;
  const activation = options.activation ?? "none";
  const variant = options.variant;
  const problem = makeProblem(
    plan,
    { tensor: a, transposed: options.transposeA ?? false, batched: plan.aBatched },
    { tensor: b, transposed: options.transposeB ?? false, batched: plan.bBatched },
  );
  const inputs = bias ? [a, b, bias] : [a, b];
  const recording = needsGrad(...inputs);
  // ReLU's derivative is readable from its output; SiLU and GELU need z itself.
  const keepPreActivation = recording && (activation === "silu" || activation === "gelu");
  const output = Tensor.empty(gpu, plan.outputShape);
  const preActivation = keepPreActivation ? Tensor.empty(gpu, plan.outputShape) : null;
  dispatch(variant, problem, output, { bias, activation, preActivation });
  if (recording) {
    record(
      "matmul",
      inputs,
      [output],
      // The backward products dispatch directly, so they record nothing on the tape.
      ([gradOutput]) => {
        const gradZ =
          activation === "none"
            ? gradOutput!
            : activationBackward(gradOutput!, preActivation ?? output, activation);
        const grads = matmulBackward(variant, problem, gradZ, a, b, bias);
        if (gradZ !== gradOutput) gradZ.release();
        return grads;
      },
      preActivation ? [preActivation] : [],
    );
  }
  return output;
}
