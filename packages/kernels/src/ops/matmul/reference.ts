/**
 * The float64 CPU reference of matmul (forward and the gradients of a, b and the bias), on row-major
 * data with the op's conventions (transposes read in place, batch broadcast, fused bias and
 * activation). `matmulOpReference` is the same behind the shared op-reference interface.
 */
import { OpError, type Shape, sizeOf } from "../../runtime/tensor.ts";
import type { OpReference } from "../common/reference.ts";
import { UNARY_FUNCTIONS } from "../unary/index.ts";
import type { MatmulActivation } from "./common.ts";
import { layoutOfA, layoutOfB, type MatmulPlan, resolveMatmulShapes } from "./shapes.ts";

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

/** What a matmul call is, for the shared reference interface: operand shapes and options. */
export interface MatmulParams {
  a: Shape;
  b: Shape;
  transposeA?: boolean;
  transposeB?: boolean;
  /** Inputs are [a, b, bias] when true, [a, b] otherwise. */
  bias?: boolean;
  activation?: MatmulActivation;
}

/** `matmulReference` behind the shared interface: inputs [a, b] or [a, b, bias], one gradient each. */
export const matmulOpReference: OpReference<MatmulParams> = {
  forward: ([a, b, bias], params) =>
    matmulReference.forward(a, params.a, b, params.b, { ...params, bias: params.bias ? bias : null }),
  backward: ([a, b, bias], gradOutput, params) => {
    const grads = matmulReference.backward(a, params.a, b, params.b, gradOutput, {
      ...params,
      bias: params.bias ? bias : null,
    });
    return params.bias ? [grads.a, grads.b, grads.bias] : [grads.a, grads.b];
  },
};
