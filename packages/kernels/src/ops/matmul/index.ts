/**
 * Matrix multiplication: batched `[..., M, K] x [..., K, N]`, either operand read transposed in place
 * (no transpose copies: Linear is `x [rows, in]` times `W^T` with `W [out, in]`), and a fused epilogue
 * (bias over columns, then ReLU / SiLU / GELU). Backward for both operands and the bias. Layout of the
 * op family (like ops/softmax/):
 * - `index.ts` (this file): checks, the launch, the gradient;
 * - `choose.ts`: which variant runs (pure function of adapter kind, limits and shape);
 * - `cpu-register-blocked.ts` (CPU adapters: packed textures, register blocks; its layout in
 *   `cpu-layout.ts`), `gpu-tiled.ts` (workgroup-memory tiles), `naive.ts` (one output per
 *   invocation): one file per variant with its WGSL; shared WGSL in `common.ts`, the backward's extra
 *   passes in `backward-passes.ts`;
 * - `shapes.ts`: operand shapes and strides; `problem.ts`: a product as dispatched (batch folding,
 *   epilogue bindings);
 * - `reference.ts`: the float64 reference; `cost.ts`: FLOPs and bytes; `bench.ts`: benchmark cases.
 */

import { needsGrad, record } from "../../runtime/autograd.ts";
import type { Gpu } from "../../runtime/device.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { formatShape, OpError, type Shape, sizeOf, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { checkOutputFits, requireF32, requireSameDevice } from "../common/checks.ts";
import { releaseScratchTextures } from "../common/texture-pool.ts";
import { UNARY_FUNCTIONS } from "../unary/index.ts";
import { MATMUL_ACTIVATION_BACKWARD_WGSL, MATMUL_SUM_ROWS_WGSL } from "./backward-passes.ts";
import { chooseMatmulVariant, MATMUL_VARIANTS, type MatmulVariant } from "./choose.ts";
import { ACTIVATION_CODES, MATMUL_ACTIVATIONS, type MatmulActivation, type MatmulKernels } from "./common.ts";
import { dispatchCpu, MATMUL_CPU_SOURCE, MATMUL_PACK_WGSL } from "./cpu-register-blocked.ts";
import { MATMUL_CPU_SUBGROUP_SOURCE, MATMUL_SUBGROUP_TILE, matmulCanUseSubgroups } from "./cpu-subgroup.ts";
import { MATMUL_GPU_TILED_WGSL } from "./gpu-tiled.ts";
import { matmulHalf } from "./half.ts";
import { MATMUL_NAIVE_WGSL } from "./naive.ts";
import {
  type Epilogue,
  epilogueBindings,
  epilogueParams,
  type MatmulProblem,
  makeProblem,
  type Operand,
  problemCost,
  releaseStandIns,
  stridesOfA,
  stridesOfB,
} from "./problem.ts";
import { type MatmulPlan, resolveMatmulShapes } from "./shapes.ts";

export { chooseMatmulVariant, MATMUL_VARIANTS, type MatmulVariant } from "./choose.ts";
export { MATMUL_ACTIVATIONS, type MatmulActivation, type MatmulKernels } from "./common.ts";
export { matmulCost } from "./cost.ts";
export {
  type MatmulParams,
  type MatmulReferenceGradients,
  type MatmulReferenceOptions,
  matmulOpReference,
  matmulReference,
} from "./reference.ts";
export { type MatmulPlan, type MatmulShape, resolveMatmulShapes } from "./shapes.ts";

/**
 * Every variant's kernels, exactly as launched (`cxr kernels dump matmul`): the product (forward, and
 * the products of the backward), the CPU variant's packing pass, and the backward's two extra passes.
 */
export const MATMUL_KERNELS: Readonly<Record<MatmulVariant, MatmulKernels>> = {
  "cpu-subgroup": {
    pack: MATMUL_PACK_WGSL,
    product: MATMUL_CPU_SUBGROUP_SOURCE,
    activationBackward: MATMUL_ACTIVATION_BACKWARD_WGSL,
    sumRows: MATMUL_SUM_ROWS_WGSL,
  },
  "cpu-register-blocked": {
    pack: MATMUL_PACK_WGSL,
    product: MATMUL_CPU_SOURCE,
    activationBackward: MATMUL_ACTIVATION_BACKWARD_WGSL,
    sumRows: MATMUL_SUM_ROWS_WGSL,
  },
  "gpu-tiled": {
    product: MATMUL_GPU_TILED_WGSL,
    activationBackward: MATMUL_ACTIVATION_BACKWARD_WGSL,
    sumRows: MATMUL_SUM_ROWS_WGSL,
  },
  naive: {
    product: MATMUL_NAIVE_WGSL,
    activationBackward: MATMUL_ACTIVATION_BACKWARD_WGSL,
    sumRows: MATMUL_SUM_ROWS_WGSL,
  },
};

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

/**
 * Frees the scratch textures of the CPU variants (the one pool matmul and conv2d share) and matmul's
 * stand-in buffers, e.g. between training and sampling.
 */
export function releaseMatmulScratch(gpu: Gpu): void {
  releaseScratchTextures(gpu);
  releaseStandIns(gpu);
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

function dispatch(
  forced: MatmulVariant | undefined,
  problem: MatmulProblem,
  output: Tensor,
  epilogue: Epilogue,
): void {
  const variant = variantFor(problem, forced);
  if (variant === "cpu-register-blocked") dispatchCpu(problem, output, epilogue);
  else if (variant === "cpu-subgroup") {
    if (!matmulCanUseSubgroups(output.gpu)) {
      throw new OpError(
        "matmul",
        "variant cpu-subgroup needs the 'subgroups' feature with >= 8 lanes, which this adapter lacks",
        {
          a: problem.a.tensor,
          b: problem.b.tensor,
        },
      );
    }
    dispatchCpu(problem, output, epilogue, {
      variant: "cpu-subgroup",
      code: MATMUL_CPU_SUBGROUP_SOURCE,
      tile: MATMUL_SUBGROUP_TILE,
    });
  } else dispatchStrided(variant, problem, output, epilogue);
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
  requireF32("matmul", { a, b, bias }, { a, b });
  requireSameDevice("matmul", { a, b, bias }, { a, b });
  const plan = resolveMatmulShapes(a.shape, b.shape, options);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== plan.N)) {
    throw new OpError("matmul", `bias must have shape [${plan.N}] (N), got ${formatShape(bias.shape)}`, {
      a,
      b,
      bias,
    });
  }
  checkOutputFits(a.gpu, "matmul", plan.outputShape, { a, b });
  return plan;
}

/**
 * C = activation(op(a) op(b) + bias), op = transpose where asked. `a: [..., M, K]` (or `[..., K, M]`),
 * `b: [..., K, N]` (or `[..., N, K]`); batch dims must match unless one side's batch is 1 or absent.
 * Returns `[...batch, M, N]`. Records backward for a, b and bias when any needs a gradient.
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  if (a.dtype === "f16") return matmulHalf(a, b, options); // half.ts: inference only
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
