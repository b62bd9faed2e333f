/**
 * The float64 CPU reference of layer norm over the last axis (PyTorch's F.layer_norm: biased
 * variance), forward with its per-row mean and rstd, backward for x, gamma and beta.
 * `layerNormOpReference` is the same behind the shared op-reference interface the tests use.
 */
import type { Shape } from "../../runtime/tensor.ts";
import type { OpReference } from "../common/reference.ts";

export const layerNormReference = {
  forward(
    x: Float64Array,
    width: number,
    gamma: Float64Array | null,
    beta: Float64Array | null,
    eps = 1e-5,
  ): { y: Float64Array; mean: Float64Array; rstd: Float64Array } {
    const rows = x.length / width;
    const y = new Float64Array(x.length);
    const mean = new Float64Array(rows);
    const rstd = new Float64Array(rows);
    for (let row = 0; row < rows; row++) {
      const start = row * width;
      let sum = 0;
      for (let d = 0; d < width; d++) sum += x[start + d];
      const mu = sum / width;
      let squares = 0;
      for (let d = 0; d < width; d++) squares += (x[start + d] - mu) ** 2;
      const r = 1 / Math.sqrt(squares / width + eps);
      mean[row] = mu;
      rstd[row] = r;
      for (let d = 0; d < width; d++) {
        y[start + d] = (x[start + d] - mu) * r * (gamma ? gamma[d] : 1) + (beta ? beta[d] : 0);
      }
    }
    return { y, mean, rstd };
  },
  backward(
    x: Float64Array,
    width: number,
    gamma: Float64Array | null,
    gradOutput: Float64Array,
    eps = 1e-5,
  ): { gradInput: Float64Array; gradGamma: Float64Array; gradBeta: Float64Array } {
    const rows = x.length / width;
    const { mean, rstd } = layerNormReference.forward(x, width, gamma, null, eps);
    const gradInput = new Float64Array(x.length);
    const gradGamma = new Float64Array(width);
    const gradBeta = new Float64Array(width);
    for (let row = 0; row < rows; row++) {
      const start = row * width;
      let sumGrad = 0;
      let sumGradNormalized = 0;
      for (let d = 0; d < width; d++) {
        const normalized = (x[start + d] - mean[row]) * rstd[row];
        const g = gradOutput[start + d] * (gamma ? gamma[d] : 1);
        sumGrad += g;
        sumGradNormalized += g * normalized;
        gradGamma[d] += gradOutput[start + d] * normalized;
        gradBeta[d] += gradOutput[start + d];
      }
      for (let d = 0; d < width; d++) {
        const normalized = (x[start + d] - mean[row]) * rstd[row];
        const g = gradOutput[start + d] * (gamma ? gamma[d] : 1);
        gradInput[start + d] = rstd[row] * (g - sumGrad / width - (normalized * sumGradNormalized) / width);
      }
    }
    return { gradInput, gradGamma, gradBeta };
  },
};

/** What a layer norm call is: x's shape and eps. Inputs: [x] or [x, gamma, beta]. */
export interface LayerNormParams {
  shape: Shape;
  eps?: number;
}

/** `layerNormReference` behind the shared interface: inputs x (and gamma, beta), their gradients. */
export const layerNormOpReference: OpReference<LayerNormParams> = {
  forward: ([x, gamma, beta], { shape, eps }) =>
    layerNormReference.forward(x, shape.at(-1)!, gamma ?? null, beta ?? null, eps).y,
  backward: ([x, gamma, beta], gradOutput, { shape, eps }) => {
    const grads = layerNormReference.backward(x, shape.at(-1)!, gamma ?? null, gradOutput, eps);
    return beta ? [grads.gradInput, grads.gradGamma, grads.gradBeta] : [grads.gradInput];
  },
};
