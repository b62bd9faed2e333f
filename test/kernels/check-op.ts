/**
 * Table-driven op tests: `checkOp(op, cases, badInputs)` turns a table of cases (each with the reason
 * it is there) into tests of
 * - every variant's forward and every input gradient against the op's float64 reference,
 * - the reference's gradients against central finite differences of its forward (cases that ask),
 * - bad input: each call must throw the named error.
 * An op's test file is then one op description and tables. Inputs are seeded and rounded to float32,
 * so the reference sees exactly what the GPU sees.
 */
import { backward, type Gpu, type Shape, sizeOf, Tensor } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import type { OpReference } from "../../packages/kernels/src/ops/common/reference.ts";
import {
  asFloat32,
  expectClose,
  finiteDifferenceGradient,
  gpu,
  randomValues,
  type Tolerance,
} from "./helpers.ts";

export interface OpCase<P> {
  /** Why this row is in the table (shown as the test name). */
  reason: string;
  params: P;
  /** One shape per input. */
  inputs: readonly Shape[];
  /** Input values instead of seeded random ones (e.g. huge values for a stability check). */
  values?: readonly (readonly number[])[];
  /** Standard deviation of the random inputs (default 1). */
  spread?: number;
  /** Also check the reference's gradients by finite differences (keep these cases small). */
  finiteDifferences?: boolean;
  /** Skip the GPU backward (e.g. inputs where the gradient is not meaningful). */
  forwardOnly?: boolean;
  /** Run only these variants (e.g. a large case for the designs it exercises); default all. */
  variants?: readonly string[];
}

export interface OpUnderTest<P, V extends string> {
  name: string;
  variants: readonly V[];
  reference: OpReference<P>;
  /** Runs the op on the GPU; may upload what `params` describes (masks, indices). */
  run(inputs: readonly Tensor[], params: P, variant: V, device: Gpu): Tensor;
  /**
   * Allowed error of the forward and of the gradients for a case; `gradients[i]`, where given,
   * replaces `backward` for input i's gradient (e.g. a norm's gamma sums over the batch).
   */
  tolerance(
    testCase: OpCase<P>,
    variant: V,
  ): {
    forward: Tolerance;
    backward: Tolerance;
    gradients?: readonly (Tolerance | undefined)[];
  };
  /**
   * Per-element divisor of input i's gradient, applied to the GPU's and the reference's alike before
   * comparing (e.g. layer norm's dx by its row's rstd), or null for none. Optional.
   */
  gradientScale?(index: number, inputs: readonly Float64Array[], params: P): Float64Array | null;
  /** Which inputs take a gradient (default: all). */
  differentiable?: readonly boolean[];
  /** Allowed error of one input's gradient where inputs differ (default: `tolerance(...).backward`). */
  gradientTolerance?(testCase: OpCase<P>, input: number): Tolerance;
}

export interface BadInputCase {
  reason: string;
  /** Makes the bad call. */
  run(device: Gpu): unknown;
  /** The error message (exact text or pattern). */
  throws: string | RegExp;
}

function inputValues<P>(testCase: OpCase<P>, caseIndex: number): Float64Array[] {
  return testCase.inputs.map((shape, index) => {
    const given = testCase.values?.[index];
    if (given) {
      if (given.length !== sizeOf(shape))
        throw new Error(`${testCase.reason}: input ${index} has the wrong size`);
      return asFloat32(Float64Array.from(given));
    }
    return asFloat32(randomValues(sizeOf(shape), 1000 * caseIndex + 17 * index + 3, testCase.spread ?? 1));
  });
}

async function checkVariant<P, V extends string>(
  op: OpUnderTest<P, V>,
  testCase: OpCase<P>,
  caseIndex: number,
  variant: V,
): Promise<void> {
  const device = await gpu();
  const values = inputValues(testCase, caseIndex);
  const differentiable = op.differentiable ?? testCase.inputs.map(() => true);
  const tensors = values.map((data, index) => {
    const tensor = Tensor.upload(device, Float32Array.from(data), testCase.inputs[index]);
    return differentiable[index] && !testCase.forwardOnly ? tensor.trainable() : tensor;
  });
  const tolerance = op.tolerance(testCase, variant);
  const output = op.run(tensors, testCase.params, variant, device);
  const expected = op.reference.forward(values, testCase.params);
  expectClose(await output.download(), expected, tolerance.forward, `${op.name} ${variant} forward`);
  if (!testCase.forwardOnly) {
    const gradOutput = asFloat32(randomValues(expected.length, 7919 + caseIndex));
    backward(output, Tensor.upload(device, Float32Array.from(gradOutput), output.shape));
    const gradients = op.reference.backward(values, gradOutput, testCase.params);
    for (let index = 0; index < tensors.length; index++) {
      const want = gradients[index];
      if (!differentiable[index] || !want) continue;
      const grad = tensors[index].grad;
      expect(grad, `${op.name} ${variant}: input ${index} got no gradient`).not.toBeNull();
      const divisor = op.gradientScale?.(index, values, testCase.params) ?? null;
      const scaled = (gradient: ArrayLike<number>) =>
        divisor ? Float64Array.from(gradient, (value, at) => value / divisor[at]) : gradient;
      expectClose(
        scaled(await grad!.download()),
        scaled(want),
        op.gradientTolerance?.(testCase, index) ?? tolerance.gradients?.[index] ?? tolerance.backward,
        `${op.name} ${variant} gradient ${index}`,
      );
    }
  }
  for (const tensor of [...tensors, output]) tensor.release();
}

export function checkOp<P, V extends string>(
  op: OpUnderTest<P, V>,
  cases: readonly OpCase<P>[],
  badInputs: readonly BadInputCase[] = [],
): void {
  describe(op.name, () => {
    describe.each(op.variants)("variant %s against the float64 reference", (variant) => {
      cases.forEach((testCase, caseIndex) => {
        if (testCase.variants && !testCase.variants.includes(variant)) return;
        it(testCase.reason, () => checkVariant(op, testCase, caseIndex, variant));
      });
    });

    const differenced = cases.filter((testCase) => testCase.finiteDifferences);
    if (differenced.length > 0) {
      describe("reference gradients against finite differences", () => {
        for (const testCase of differenced) {
          it(testCase.reason, () => {
            const caseIndex = cases.indexOf(testCase);
            const values = inputValues(testCase, caseIndex);
            const gradOutput = randomValues(
              op.reference.forward(values, testCase.params).length,
              31 + caseIndex,
            );
            const analytic = op.reference.backward(values, gradOutput, testCase.params);
            values.forEach((_, index) => {
              const want = analytic[index];
              if (!want) return;
              const forward = (inputs: Float64Array[]) => op.reference.forward(inputs, testCase.params);
              const numeric = finiteDifferenceGradient(
                forward,
                values.map((input) => Float64Array.from(input)),
                gradOutput,
                index,
              );
              expectClose(
                want,
                numeric,
                { atol: 1e-8, rtol: 1e-6 },
                `${op.name} reference gradient ${index}`,
              );
            });
          });
        }
      });
    }

    if (badInputs.length > 0) {
      describe("bad input", () => {
        for (const bad of badInputs) {
          it(bad.reason, async () => {
            const device = await gpu();
            expect(() => bad.run(device)).toThrow(bad.throws);
          });
        }
      });
    }
  });
}
