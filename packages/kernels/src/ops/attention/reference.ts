/**
 * Float64 reference of attention: explicit score matrices, the specification the kernels are tested
 * against. `attentionReference` works on whole tensors with a shape; `attentionOpReference` is the
 * same behind the shared op-reference interface (ops/common/reference.ts) that the table-driven tests
 * (test/kernels/check-op.ts) use: inputs [q, k, v], output O, gradients [dQ, dK, dV].
 */
import type { OpReference } from "../common/reference.ts";
import type { AttentionShape } from "./cost.ts";

export interface AttentionReferenceOptions {
  scale?: number;
  /** [B * Lk] of 1 / 0. */
  keyMask?: Float64Array;
}

function referenceProbabilities(
  q: Float64Array,
  k: Float64Array,
  shape: AttentionShape,
  options: AttentionReferenceOptions,
  head: number,
  i: number,
): { probabilities: Float64Array; logSumExp: number } {
  const { heads, queryLength, keyLength, headDim } = shape;
  const scale = options.scale ?? 1 / Math.sqrt(headDim);
  const batch = Math.floor(head / heads);
  const scores = new Float64Array(keyLength);
  let maximum = -Infinity;
  for (let j = 0; j < keyLength; j++) {
    if (options.keyMask && options.keyMask[batch * keyLength + j] === 0) {
      scores[j] = -Infinity;
      continue;
    }
    let dot = 0;
    for (let d = 0; d < headDim; d++) {
      dot += q[(head * queryLength + i) * headDim + d] * k[(head * keyLength + j) * headDim + d];
    }
    scores[j] = scale * dot;
    maximum = Math.max(maximum, scores[j]);
  }
  const probabilities = new Float64Array(keyLength);
  if (maximum === -Infinity) return { probabilities, logSumExp: 0 }; // every key masked
  let sum = 0;
  for (let j = 0; j < keyLength; j++) sum += Math.exp(scores[j] - maximum);
  for (let j = 0; j < keyLength; j++) probabilities[j] = Math.exp(scores[j] - maximum) / sum;
  return { probabilities, logSumExp: maximum + Math.log(sum) };
}

export const attentionReference = {
  /** Output [B, H, Lq, D] and the per-row log-sum-exp [B, H, Lq] (0 for fully masked rows). */
  forward(
    q: Float64Array,
    k: Float64Array,
    v: Float64Array,
    shape: AttentionShape,
    options: AttentionReferenceOptions = {},
  ): { output: Float64Array; logSumExp: Float64Array } {
    const { batch, heads, queryLength, keyLength, headDim } = shape;
    const output = new Float64Array(batch * heads * queryLength * headDim);
    const logSumExp = new Float64Array(batch * heads * queryLength);
    for (let head = 0; head < batch * heads; head++) {
      for (let i = 0; i < queryLength; i++) {
        const row = referenceProbabilities(q, k, shape, options, head, i);
        logSumExp[head * queryLength + i] = row.logSumExp;
        for (let j = 0; j < keyLength; j++) {
          const p = row.probabilities[j];
          if (p === 0) continue;
          for (let d = 0; d < headDim; d++) {
            output[(head * queryLength + i) * headDim + d] += p * v[(head * keyLength + j) * headDim + d];
          }
        }
      }
    }
    return { output, logSumExp };
  },

  /** Gradients with respect to q, k and v of sum(gradOutput * forward(q, k, v)). */
  backward(
    q: Float64Array,
    k: Float64Array,
    v: Float64Array,
    gradOutput: Float64Array,
    shape: AttentionShape,
    options: AttentionReferenceOptions = {},
  ): { gradQuery: Float64Array; gradKey: Float64Array; gradValue: Float64Array } {
    const { batch, heads, queryLength, keyLength, headDim } = shape;
    const scale = options.scale ?? 1 / Math.sqrt(headDim);
    const gradQuery = new Float64Array(q.length);
    const gradKey = new Float64Array(k.length);
    const gradValue = new Float64Array(v.length);
    const at = (head: number, length: number, row: number, d: number) => (head * length + row) * headDim + d;
    for (let head = 0; head < batch * heads; head++) {
      for (let i = 0; i < queryLength; i++) {
        const { probabilities } = referenceProbabilities(q, k, shape, options, head, i);
        // dP_ij = dO_i . v_j; dS_ij = P_ij (dP_ij - sum_l P_il dP_il)
        const gradProbabilities = new Float64Array(keyLength);
        let weighted = 0;
        for (let j = 0; j < keyLength; j++) {
          let dot = 0;
          for (let d = 0; d < headDim; d++) {
            dot += gradOutput[at(head, queryLength, i, d)] * v[at(head, keyLength, j, d)];
          }
          gradProbabilities[j] = dot;
          weighted += probabilities[j] * dot;
        }
        for (let j = 0; j < keyLength; j++) {
          const p = probabilities[j];
          const gradScore = p * (gradProbabilities[j] - weighted);
          for (let d = 0; d < headDim; d++) {
            gradValue[at(head, keyLength, j, d)] += p * gradOutput[at(head, queryLength, i, d)];
            gradQuery[at(head, queryLength, i, d)] += scale * gradScore * k[at(head, keyLength, j, d)];
            gradKey[at(head, keyLength, j, d)] += scale * gradScore * q[at(head, queryLength, i, d)];
          }
        }
      }
    }
    return { gradQuery, gradKey, gradValue };
  },
};

/** One attention call for the shared reference interface: the shape and the options. */
export interface AttentionParams {
  shape: AttentionShape;
  scale?: number;
  /** [B * Lk] of 1 (keep) / 0 (drop). */
  keyMask?: Float64Array;
}

export const attentionOpReference: OpReference<AttentionParams> = {
  forward: ([q, k, v], { shape, scale, keyMask }) =>
    attentionReference.forward(q, k, v, shape, { scale, keyMask }).output,
  backward: ([q, k, v], gradOutput, { shape, scale, keyMask }) => {
    const grads = attentionReference.backward(q, k, v, gradOutput, shape, { scale, keyMask });
    return [grads.gradQuery, grads.gradKey, grads.gradValue];
  },
};
