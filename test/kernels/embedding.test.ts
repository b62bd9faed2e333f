import {
  backward,
  defaultGpu,
  embedding,
  embeddingReference,
  OpError,
  Tensor,
  uploadTokens,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { expectClose, randomValues, upload } from "./helpers.ts";

describe("embedding", () => {
  it.each([
    [1, 1, [0]],
    [10, 7, [3, 3, 9, 0, 3]],
    [49408, 64, Array.from({ length: 77 }, (_, index) => (index * 7919) % 49408)],
  ])(
    "vocabulary %i x dim %i: lookup and gradient (repeated ids accumulate)",
    async (vocabulary, dim, ids) => {
      const tableValues = randomValues(vocabulary * dim, vocabulary);
      const table = await upload(tableValues, [vocabulary, dim], true);
      const tokens = uploadTokens(table, ids, [ids.length]);
      const output = embedding(table, tokens);
      expect(output.shape).toEqual([ids.length, dim]);
      expectClose(
        await output.download(),
        embeddingReference.forward(tableValues, dim, ids),
        { atol: 0, rtol: 0 },
        "lookup",
      );
      const gy = randomValues(output.size, 5);
      backward(output, await upload(gy, output.shape));
      expectClose(
        await table.grad!.download(),
        embeddingReference.backward(vocabulary, dim, ids, gy),
        { atol: 1e-6, rtol: 1e-6 },
        "gradient",
      );
    },
  );

  it("rejects ids outside the vocabulary and float ids", async () => {
    const table = await upload(randomValues(12, 1), [4, 3]);
    expect(() => uploadTokens(table, [1, 4], [2])).toThrow(
      /embedding: token id 4 at position 1 is outside the vocabulary \[0, 4\)/,
    );
    const floats = Tensor.upload(await defaultGpu(), [1, 2], [2]);
    expect(() => embedding(table, floats)).toThrow(OpError);
    expect(() => embedding(table, floats)).toThrow(
      /embedding: token ids must be u32, got f32 \(table: \[4, 3\], tokens: \[2\]\)/,
    );
  });
});
