/**
 * The embedding lookup (ops/embedding/) as a checkOp table: the lookup exactly, the table gradient
 * (repeated ids accumulate) against the float64 reference and by finite differences, bad input; then
 * the output shape and the dump.
 */
import { backward, embedding, Tensor, uploadTokens } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { EMBEDDING_KERNELS } from "../../packages/kernels/src/ops/embedding/index.ts";
import {
  type EmbeddingParams,
  embeddingOpReference,
} from "../../packages/kernels/src/ops/embedding/reference.ts";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { compiledWhile } from "./compiled.ts";
import { randomValues, upload } from "./helpers.ts";

function lookup(
  reason: string,
  vocabulary: number,
  dim: number,
  tokens: number[],
  tokenShape: number[] = [tokens.length],
  finiteDifferences = false,
): OpCase<EmbeddingParams> {
  return {
    reason,
    params: { vocabulary, dim, tokens, tokenShape },
    inputs: [[vocabulary, dim]],
    finiteDifferences,
  };
}

const cases: OpCase<EmbeddingParams>[] = [
  lookup("vocabulary 1 x dim 1, one token", 1, 1, [0]),
  lookup("repeated ids accumulate (10 x 7)", 10, 7, [3, 3, 9, 0, 3]),
  lookup(
    "CLIP's vocabulary 49408 x 64, 77 tokens",
    49408,
    64,
    Array.from({ length: 77 }, (_, index) => (index * 7919) % 49408),
  ),
  lookup("a [2, 3] batch of ids, dim 65 (one past a workgroup)", 5, 65, [4, 0, 4, 1, 1, 2], [2, 3]),
  lookup("small, repeated ids, for finite differences", 4, 3, [1, 3, 1], [3], true),
];

const badInputs: BadInputCase[] = [
  {
    reason: "an id outside the vocabulary",
    run: (device) => uploadTokens(Tensor.upload(device, randomValues(12, 1), [4, 3]), [1, 4], [2]),
    throws: "embedding: token id 4 at position 1 is outside the vocabulary [0, 4) (table: [4, 3])",
  },
  {
    reason: "a fractional id",
    run: (device) => uploadTokens(Tensor.upload(device, randomValues(12, 1), [4, 3]), [1.5], [1]),
    throws: "embedding: token id 1.5 at position 0 is outside the vocabulary [0, 4)",
  },
  {
    reason: "f32 token ids",
    run: (device) =>
      embedding(Tensor.upload(device, randomValues(12, 1), [4, 3]), Tensor.upload(device, [1, 2], [2])),
    throws: "embedding: token ids must be u32, got f32 (table: [4, 3], tokens: [2])",
  },
  {
    reason: "a table that is not [vocabulary, dim]",
    run: (device) =>
      embedding(Tensor.upload(device, randomValues(12, 1), [12]), Tensor.upload(device, [1], [1], "u32")),
    throws: "embedding: table must be [vocabulary, dim] (table: [12], tokens: [1])",
  },
];

checkOp(
  {
    name: "embedding",
    variants: ["default"],
    reference: embeddingOpReference,
    run: ([table], { tokens, tokenShape }) => embedding(table, uploadTokens(table, tokens, tokenShape)),
    // The lookup is a copy; the gradient adds at most a handful of f32 values per entry.
    tolerance: () => ({ forward: { atol: 0, rtol: 0 }, backward: { atol: 1e-6, rtol: 1e-6 } }),
  },
  cases,
  badInputs,
);

describe("embedding: the rest", () => {
  it("gives [...tokens.shape, dim]", async () => {
    const table = await upload(randomValues(15, 2), [5, 3]);
    const output = embedding(table, uploadTokens(table, [0, 1, 2, 3, 4, 0], [2, 3]));
    expect(output.shape).toEqual([2, 3, 3]);
    output.release();
    table.release();
  });

  it("the WGSL that `cxr kernels dump embedding` prints is what runs", async () => {
    const compiled = await compiledWhile(async (device) => {
      const table = (await upload(randomValues(12, 3), [4, 3])).trainable();
      const output = embedding(table, uploadTokens(table, [1, 2], [2]));
      backward(output, Tensor.upload(device, new Float32Array(6).fill(1), [2, 3]));
      await table.grad!.download();
    });
    expect(compiled).toEqual([EMBEDDING_KERNELS.default.forward, EMBEDDING_KERNELS.default.backward]);
    expect(dumpKernelSources({ op: "embedding", pass: "forward" })).toBe(
      `// embedding / default / forward${EMBEDDING_KERNELS.default.forward}\n`,
    );
  });
});
