/**
 * matmul's f16 variant (inference only): f16 operands, bias and output, f32 accumulation. Each
 * invocation owns a 4 x 4 block of one product of the batch: per step of the contraction it widens 4
 * values of a and 4 of b to f32 and does 16 multiply-adds into four vec4<f32> accumulators; bias and
 * activation are applied in f32 and the block is rounded to f16 once at the store. Operands are read
 * through strides (shapes.ts: a transposed or not, b transposed or not, a batch of 1 reused), so
 * Linear's `x W^T + b` reads W [out, in] in place. Edge blocks clamp their loads and skip the stores.
 */
import { grid, LINEAR_INDEX_WGSL, launch } from "../../runtime/kernel.ts";
import { formatShape, OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { checkHalfOperands, HALF_PRELUDE_WGSL } from "../common/half.ts";
import { ACTIVATION_CODES, ACTIVATION_WGSL, MATMUL_ACTIVATIONS, type MatmulActivation } from "./common.ts";
import { layoutOfA, layoutOfB, resolveMatmulShapes } from "./shapes.ts";

export const MATMUL_HALF_WGSL = `${HALF_PRELUDE_WGSL}
@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(1) var<storage, read> b: array<f16>;
@group(0) @binding(2) var<storage, read> bias: array<f16>;
@group(0) @binding(3) var<storage, read_write> c: array<f16>;
struct Params {
  batch: u32, M: u32, N: u32, K: u32,
  aBatch: u32, aOuter: u32, aDepth: u32, hasBias: u32,
  bBatch: u32, bOuter: u32, bDepth: u32, activation: u32,
}
@group(0) @binding(4) var<uniform> p: Params;
${ACTIVATION_WGSL}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  let blocksN = (p.N + 3u) / 4u;
  let blocksM = (p.M + 3u) / 4u;
  if (index >= p.batch * blocksM * blocksN) { return; }
  let n0 = (index % blocksN) * 4u;
  let m0 = ((index / blocksN) % blocksM) * 4u;
  let product = index / (blocksN * blocksM);
  // Rows and columns past the edge read the last one (their results are not stored).
  var aRow: array<u32, 4>;
  var bColumn: array<u32, 4>;
  for (var i = 0u; i < 4u; i++) {
    aRow[i] = product * p.aBatch + min(m0 + i, p.M - 1u) * p.aOuter;
    bColumn[i] = product * p.bBatch + min(n0 + i, p.N - 1u) * p.bOuter;
  }
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var k = 0u; k < p.K; k++) {
    let ka = k * p.aDepth;
    let kb = k * p.bDepth;
    let bk = vec4<f32>(f32(b[bColumn[0] + kb]), f32(b[bColumn[1] + kb]), f32(b[bColumn[2] + kb]), f32(b[bColumn[3] + kb]));
    acc0 += f32(a[aRow[0] + ka]) * bk;
    acc1 += f32(a[aRow[1] + ka]) * bk;
    acc2 += f32(a[aRow[2] + ka]) * bk;
    acc3 += f32(a[aRow[3] + ka]) * bk;
  }
  var biasValues = vec4<f32>(0.0);
  if (p.hasBias != 0u) {
    biasValues = vec4<f32>(f32(bias[min(n0, p.N - 1u)]), f32(bias[min(n0 + 1u, p.N - 1u)]),
                           f32(bias[min(n0 + 2u, p.N - 1u)]), f32(bias[min(n0 + 3u, p.N - 1u)]));
  }
  var rows = array<vec4<f32>, 4>(acc0 + biasValues, acc1 + biasValues, acc2 + biasValues, acc3 + biasValues);
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + i;
    if (m >= p.M) { break; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + j;
      if (n >= p.N) { break; }
      c[(product * p.M + m) * p.N + n] = toHalf(activate(rows[i][j], p.activation));
    }
  }
}`;

export interface MatmulHalfOptions {
  transposeA?: boolean;
  transposeB?: boolean;
  bias?: Tensor | null;
  activation?: MatmulActivation;
}

/** C = activation(op(a) op(b) + bias) for f16 operands; the same shapes as `matmul`. */
export function matmulHalf(a: Tensor, b: Tensor, options: MatmulHalfOptions = {}): Tensor {
  const bias = options.bias ?? null;
  const gpu = checkHalfOperands("matmul", { a, b, bias });
  const activation = options.activation ?? "none";
  if (!MATMUL_ACTIVATIONS.includes(activation)) {
    throw new OpError("matmul", `unknown activation "${activation}" (use ${MATMUL_ACTIVATIONS.join(", ")})`, {
      a,
      b,
    });
  }
  const plan = resolveMatmulShapes(a.shape, b.shape, options);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== plan.N)) {
    throw new OpError("matmul", `bias must have shape [${plan.N}] (N), got ${formatShape(bias.shape)}`, {
      a,
      b,
      bias,
    });
  }
  const A = layoutOfA(plan, plan.aBatched, options.transposeA ?? false);
  const B = layoutOfB(plan, plan.bBatched, options.transposeB ?? false);
  const output = Tensor.empty(gpu, plan.outputShape, "f16");
  const blocks = plan.batch * Math.ceil(plan.M / 4) * Math.ceil(plan.N / 4);
  launch(
    gpu,
    { name: "matmul", variant: "f16", code: MATMUL_HALF_WGSL },
    {
      bindings: [a, b, bias ?? a, output],
      params: new Params()
        .u32(plan.batch, plan.M, plan.N, plan.K)
        .u32(A.batchStride, A.outerStride, A.depthStride, bias ? 1 : 0)
        .u32(B.batchStride, B.outerStride, B.depthStride, ACTIVATION_CODES[activation]),
      workgroups: grid(blocks, 64),
      flops: 2 * plan.batch * plan.M * plan.N * plan.K,
      bytes: 2 * (a.size + b.size + output.size),
    },
  );
  return output;
}
