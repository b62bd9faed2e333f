/**
 * Embedding lookup: a table [vocabulary, dim] indexed by a u32 tensor of token ids [...] gives
 * [..., dim] (CLIP token and position embeddings). The backward pass gives each embedding column to
 * one invocation, which walks the tokens in order and adds into its column: race-free without
 * atomics and deterministic.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import { grid, LINEAR_INDEX_WGSL, launch } from "../runtime/kernel.ts";
import { OpError, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

export const EMBEDDING_WGSL = `
@group(0) @binding(0) var<storage, read> table: array<f32>;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
struct Params { size: u32, dim: u32, vocabulary: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  // Ids are range-checked on upload by embedding(); min() keeps a stray id from reading out of bounds.
  let token = min(tokens[index / params.dim], params.vocabulary - 1u);
  output[index] = table[token * params.dim + index % params.dim];
}`;

export const EMBEDDING_BACKWARD_WGSL = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> gradTable: array<f32>;
struct Params { tokenCount: u32, dim: u32, vocabulary: u32 }
@group(0) @binding(3) var<uniform> params: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let column = gid.x;
  if (column >= params.dim) { return; }
  for (var t = 0u; t < params.tokenCount; t++) {
    let token = min(tokens[t], params.vocabulary - 1u);
    gradTable[token * params.dim + column] += gradOutput[t * params.dim + column];
  }
}`;

/** table [V, D], tokens (u32) of any shape -> [...tokens.shape, D]. */
export function embedding(table: Tensor, tokens: Tensor): Tensor {
  if (table.rank !== 2) throw new OpError("embedding", "table must be [vocabulary, dim]", { table, tokens });
  if (tokens.dtype !== "u32")
    throw new OpError("embedding", `token ids must be u32, got ${tokens.dtype}`, { table, tokens });
  if (table.dtype !== "f32")
    throw new OpError("embedding", `table must be f32, got ${table.dtype}`, { table, tokens });
  const [vocabulary, dim] = table.shape;
  const output = Tensor.empty(table.gpu, [...tokens.shape, dim]);
  launch(
    table.gpu,
    { name: "embedding", code: EMBEDDING_WGSL },
    {
      bindings: [table, tokens, output],
      params: new Params().u32(output.size, dim, vocabulary),
      workgroups: grid(output.size, 256),
      flops: 0,
      bytes: 8 * output.size + 4 * tokens.size,
    },
  );
  if (needsGrad(table)) {
    record("embedding", [table, tokens], [output], ([gradOutput]) => {
      const gradTable = Tensor.zeros(table.gpu, table.shape);
      launch(
        table.gpu,
        { name: "embeddingBackward", code: EMBEDDING_BACKWARD_WGSL },
        {
          bindings: [gradOutput!, tokens, gradTable],
          params: new Params().u32(tokens.size, dim, vocabulary),
          workgroups: [Math.ceil(dim / 64)],
          flops: output.size,
          bytes: 12 * output.size,
        },
      );
      return [gradTable, null];
    });
  }
  return output;
}

/** Uploads token ids, checking each against the vocabulary size. */
export function uploadTokens(table: Tensor, ids: ArrayLike<number>, shape: readonly number[]): Tensor {
  const vocabulary = table.shape[0];
  for (let index = 0; index < ids.length; index++) {
    const id = ids[index];
    if (!Number.isInteger(id) || id < 0 || id >= vocabulary) {
      throw new OpError(
        "embedding",
        `token id ${id} at position ${index} is outside the vocabulary [0, ${vocabulary})`,
        {
          table,
        },
      );
    }
  }
  return Tensor.upload(table.gpu, ids, shape, "u32");
}

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
