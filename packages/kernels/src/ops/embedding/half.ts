/**
 * embedding's f16 variant (inference only): an f16 table gives f16 rows, copied exactly (the
 * lookup does no arithmetic). The text encoder's token and position tables in half precision.
 */
import { grid, launch } from "../../runtime/kernel.ts";
import { Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { checkHalfOperands } from "../common/half.ts";
import { lookupForward } from "./lookup.ts";

export const EMBEDDING_HALF_WGSL = lookupForward("f16");

/** table f16 [V, D], tokens (u32, checked by the caller) -> f16 [...tokens.shape, D]. */
export function embeddingHalf(table: Tensor, tokens: Tensor): Tensor {
  const gpu = checkHalfOperands("embedding", { table });
  const [vocabulary, dim] = table.shape;
  const output = Tensor.empty(gpu, [...tokens.shape, dim], "f16");
  launch(
    gpu,
    { name: "embedding", variant: "f16", code: EMBEDDING_HALF_WGSL },
    {
      bindings: [table, tokens, output],
      params: new Params().u32(output.size, dim, vocabulary),
      workgroups: grid(output.size, 256),
      flops: 0,
      bytes: 4 * output.size + 4 * tokens.size, // 2-byte reads and writes of each value, 4-byte ids
    },
  );
  return output;
}
