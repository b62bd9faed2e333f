/**
 * Embedding lookup: a table [vocabulary, dim] indexed by a u32 tensor of token ids [...] gives
 * [..., dim] (CLIP token and position embeddings).
 *
 * Layout (ops/softmax/ is the worked example): `lookup.ts` (the one variant's WGSL),
 * `reference.ts`, `cost.ts`. No choose.ts (one variant) and no bench.ts (77 tokens per prompt: a
 * copy not worth timing).
 */
import { needsGrad, record } from "../../runtime/autograd.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { embeddingBackwardCost, embeddingCost } from "./cost.ts";
import { embeddingHalf } from "./half.ts";
import { LOOKUP } from "./lookup.ts";

export { EMBEDDING_HALF_WGSL } from "./half.ts";
export { type EmbeddingParams, embeddingOpReference, embeddingReference } from "./reference.ts";

/** The kernels by variant and pass, exactly as launched (`cxr kernels dump embedding`). */
export const EMBEDDING_KERNELS = { default: LOOKUP } as const;

/** table [V, D], tokens (u32) of any shape -> [...tokens.shape, D]; an f16 table gives f16 rows (half.ts). */
export function embedding(table: Tensor, tokens: Tensor): Tensor {
  if (table.rank !== 2) throw new OpError("embedding", "table must be [vocabulary, dim]", { table, tokens });
  if (tokens.dtype !== "u32")
    throw new OpError("embedding", `token ids must be u32, got ${tokens.dtype}`, { table, tokens });
  if (table.dtype === "f16") return embeddingHalf(table, tokens); // half.ts: inference only
  if (table.dtype !== "f32")
    throw new OpError("embedding", `table must be f32 or f16, got ${table.dtype}`, { table, tokens });
  const [vocabulary, dim] = table.shape;
  const output = Tensor.empty(table.gpu, [...tokens.shape, dim]);
  launch(
    table.gpu,
    { name: "embedding", code: EMBEDDING_KERNELS.default.forward },
    {
      bindings: [table, tokens, output],
      params: new Params().u32(output.size, dim, vocabulary),
      workgroups: grid(output.size, 256),
      ...embeddingCost(output.size, tokens.size),
    },
  );
  if (needsGrad(table)) {
    record("embedding", [table, tokens], [output], ([gradOutput]) => {
      const gradTable = Tensor.zeros(table.gpu, table.shape);
      launch(
        table.gpu,
        { name: "embeddingBackward", code: EMBEDDING_KERNELS.default.backward },
        {
          bindings: [gradOutput!, tokens, gradTable],
          params: new Params().u32(tokens.size, dim, vocabulary),
          workgroups: [Math.ceil(dim / 64)],
          ...embeddingBackwardCost(output.size),
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
