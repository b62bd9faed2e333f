/**
 * Float64 references of the losses, and the same behind the shared op-reference interface
 * (`mseOpReference`: inputs prediction, target; `bceOpReference`: inputs logits, targets, the mask a
 * parameter; reduced losses give a one-element output).
 */
import type { OpReference } from "../common/reference.ts";

export type LossReduction = "mean" | "sum" | "none";

function referenceBce(z: number, y: number): number {
  return Math.max(z, 0) - z * y + Math.log1p(Math.exp(-Math.abs(z)));
}

function referenceSigmoid(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

export const mseLossReference = {
  forward(prediction: Float64Array, target: Float64Array, reduction: LossReduction = "mean"): Float64Array {
    const squares = prediction.map((value, index) => (value - target[index]) ** 2);
    if (reduction === "none") return squares;
    const total = squares.reduce((sum, value) => sum + value, 0);
    return Float64Array.of(reduction === "mean" ? total / prediction.length : total);
  },
  backward(
    prediction: Float64Array,
    target: Float64Array,
    gradOutput: Float64Array,
    reduction: LossReduction = "mean",
  ): { gradPrediction: Float64Array; gradTarget: Float64Array } {
    const scale = reduction === "mean" ? 1 / prediction.length : 1;
    const gradPrediction = prediction.map(
      (value, index) => 2 * (value - target[index]) * scale * gradOutput[reduction === "none" ? index : 0],
    );
    return { gradPrediction, gradTarget: gradPrediction.map((value) => -value) };
  },
};

export const bceWithLogitsReference = {
  forward(logits: Float64Array, targets: Float64Array, mask: Float64Array | null = null): number {
    let total = 0;
    let weight = 0;
    logits.forEach((z, index) => {
      const m = mask ? mask[index] : 1;
      if (m !== 0) total += m * referenceBce(z, targets[index]);
      weight += m;
    });
    return weight === 0 ? 0 : total / weight;
  },
  backward(
    logits: Float64Array,
    targets: Float64Array,
    mask: Float64Array | null,
    gradOutput: number,
  ): { gradLogits: Float64Array; gradTargets: Float64Array } {
    const weight = mask ? mask.reduce((sum, value) => sum + value, 0) : logits.length;
    const factor = (index: number) => (weight === 0 ? 0 : (gradOutput * (mask ? mask[index] : 1)) / weight);
    return {
      gradLogits: logits.map(
        (z, index) =>
          factor(index) *
          ((1 - targets[index]) * referenceSigmoid(z) - targets[index] * referenceSigmoid(-z)),
      ),
      gradTargets: logits.map((z, index) => factor(index) * -z),
    };
  },
};

/** What an MSE call is: the reduction. */
export interface MseParams {
  reduction: LossReduction;
}

export const mseOpReference: OpReference<MseParams> = {
  forward: ([prediction, target], { reduction }) => mseLossReference.forward(prediction, target, reduction),
  backward: ([prediction, target], gradOutput, { reduction }) => {
    const { gradPrediction, gradTarget } = mseLossReference.backward(
      prediction,
      target,
      gradOutput,
      reduction,
    );
    return [gradPrediction, gradTarget];
  },
};

/** What a BCE call is: the mask (null: every element counts). */
export interface BceParams {
  mask: Float64Array | null;
}

export const bceOpReference: OpReference<BceParams> = {
  forward: ([logits, targets], { mask }) =>
    Float64Array.of(bceWithLogitsReference.forward(logits, targets, mask)),
  backward: ([logits, targets], gradOutput, { mask }) => {
    const { gradLogits, gradTargets } = bceWithLogitsReference.backward(logits, targets, mask, gradOutput[0]);
    return [gradLogits, gradTargets];
  },
};
