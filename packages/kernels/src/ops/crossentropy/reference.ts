/**
 * Float64 reference of softmax cross-entropy: the loss and its gradient with respect to the logits;
 * `crossEntropyOpReference` is the same behind the shared op-reference interface (one input, the
 * logits; targets and mask are parameters; the output is the [1] loss).
 */
import type { OpReference } from "../common/reference.ts";

/** Float64 reference: the loss and its gradient with respect to the logits. */
export const softmaxCrossEntropyReference = {
  forward(
    logits: Float64Array,
    classes: number,
    targets: ArrayLike<number>,
    mask: ArrayLike<number>,
  ): number {
    const rows = logits.length / classes;
    let total = 0;
    let weight = 0;
    for (let row = 0; row < rows; row++) {
      weight += mask[row];
      if (mask[row] === 0) continue;
      const values = logits.subarray(row * classes, (row + 1) * classes);
      const largest = Math.max(...values);
      const logSum = Math.log(values.reduce((sum, value) => sum + Math.exp(value - largest), 0)) + largest;
      total += mask[row] * (logSum - values[targets[row]]);
    }
    return weight === 0 ? 0 : total / weight;
  },
  backward(
    logits: Float64Array,
    classes: number,
    targets: ArrayLike<number>,
    mask: ArrayLike<number>,
    gradOutput: number,
  ): Float64Array {
    const rows = logits.length / classes;
    const weight = Array.from(mask).reduce((sum, value) => sum + value, 0);
    const grad = new Float64Array(logits.length);
    for (let row = 0; row < rows; row++) {
      if (weight === 0 || mask[row] === 0) continue;
      const values = logits.subarray(row * classes, (row + 1) * classes);
      const largest = Math.max(...values);
      const total = values.reduce((sum, value) => sum + Math.exp(value - largest), 0);
      for (let k = 0; k < classes; k++) {
        const probability = Math.exp(values[k] - largest) / total;
        grad[row * classes + k] =
          ((mask[row] * gradOutput) / weight) * (probability - (k === targets[row] ? 1 : 0));
      }
    }
    return grad;
  },
};

/** What a cross-entropy call is: the class count, a class index and a mask weight per row. */
export interface CrossEntropyParams {
  classes: number;
  targets: readonly number[];
  mask: readonly number[];
}

export const crossEntropyOpReference: OpReference<CrossEntropyParams> = {
  forward: ([logits], { classes, targets, mask }) =>
    Float64Array.of(softmaxCrossEntropyReference.forward(logits, classes, targets, mask)),
  backward: ([logits], gradOutput, { classes, targets, mask }) => [
    softmaxCrossEntropyReference.backward(logits, classes, targets, mask, gradOutput[0]),
  ],
};
