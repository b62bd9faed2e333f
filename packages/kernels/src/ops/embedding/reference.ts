/**
 * Float64 reference of the embedding lookup; `embeddingOpReference` is the same behind the shared
 * op-reference interface (one input, the table; the token ids are a parameter).
 */
import type { OpReference } from "../common/reference.ts";

export const embeddingReference = {
  forward(table: Float64Array, dim: number, tokens: ArrayLike<number>): Float64Array {
    const output = new Float64Array(tokens.length * dim);
    for (let t = 0; t < tokens.length; t++) {
      for (let d = 0; d < dim; d++) output[t * dim + d] = table[tokens[t] * dim + d];
    }
    return output;
  },
  backward(
    vocabulary: number,
    dim: number,
    tokens: ArrayLike<number>,
    gradOutput: Float64Array,
  ): Float64Array {
    const grad = new Float64Array(vocabulary * dim);
    for (let t = 0; t < tokens.length; t++) {
      for (let d = 0; d < dim; d++) grad[tokens[t] * dim + d] += gradOutput[t * dim + d];
    }
    return grad;
  },
};

/** What an embedding call is: the table's size and the token ids (with their shape). */
export interface EmbeddingParams {
  vocabulary: number;
  dim: number;
  tokens: readonly number[];
  tokenShape: readonly number[];
}

export const embeddingOpReference: OpReference<EmbeddingParams> = {
  forward: ([table], { dim, tokens }) => embeddingReference.forward(table, dim, tokens),
  backward: (_inputs, gradOutput, { vocabulary, dim, tokens }) => [
    embeddingReference.backward(vocabulary, dim, tokens, gradOutput),
  ],
};
