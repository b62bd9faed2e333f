/**
 * `checkpoint(fn, inputs, parameters)`: gradient checkpointing on the autograd tape. The same
 * function with and without a checkpoint must give the same output and the same gradients (inputs
 * upstream of the checkpoint, the checkpoint's own inputs and the parameters it closes over); its
 * intermediates must not stay alive between forward and backward; misuse is refused by name.
 */
import {
  add,
  backward,
  checkpoint,
  concat,
  defaultGpu,
  type Gpu,
  matmul,
  mul,
  noGrad,
  OpError,
  relu,
  sum,
  Tensor,
} from "@cxr/kernels";
import { beforeAll, describe, expect, it } from "vitest";
import { sizeClass } from "../../packages/kernels/src/runtime/pool.ts";
import { randomValues } from "./helpers.ts";

let gpu: Gpu;
beforeAll(async () => {
  gpu = await defaultGpu();
});

interface Graph {
  x: Tensor;
  w1: Tensor;
  w2: Tensor;
  release(): void;
}

function graph(): Graph {
  const x = Tensor.upload(gpu, randomValues(5 * 7, 1), [5, 7]).trainable();
  const w1 = Tensor.upload(gpu, randomValues(7 * 9, 2, 0.5), [7, 9]).trainable();
  const w2 = Tensor.upload(gpu, randomValues(18 * 3, 3, 0.5), [18, 3]).trainable();
  return {
    x,
    w1,
    w2,
    release() {
      for (const tensor of [x, w1, w2]) tensor.release();
    },
  };
}

/** The checkpointed part: concat of two pieces, then a matmul with w2 (a closed-over leaf), ReLU. */
function middle(pieces: Tensor[], w2: Tensor): Tensor {
  return relu(matmul(concat(pieces, 1), w2));
}

/** Loss of upstream (x @ w1 and its ReLU) -> middle -> squared sum, with or without a checkpoint. */
function loss(g: Graph, useCheckpoint: boolean, passes?: boolean[]): Tensor {
  const a = matmul(g.x, g.w1);
  const b = relu(a);
  const out = useCheckpoint
    ? checkpoint(
        (inputs, pass) => {
          passes?.push(pass.recomputing);
          return middle(inputs, g.w2);
        },
        [a, b],
        [g.w2],
      )
    : middle([a, b], g.w2);
  return sum(mul(out, out));
}

describe("checkpoint", () => {
  it("gives the same output and bit-identical gradients as the plain (uncheckpointed) graph", async () => {
    const g = graph();
    try {
      const plain = loss(g, false);
      const plainValue = await plain.download();
      backward(plain);
      const expected = await Promise.all([g.x, g.w1, g.w2].map((t) => t.grad!.download()));
      for (const t of [g.x, g.w1, g.w2]) {
        t.grad!.release();
        t.grad = null;
      }
      plain.release();

      const passes: boolean[] = [];
      const checkpointed = loss(g, true, passes);
      expect(passes).toEqual([false]);
      expect(Array.from(await checkpointed.download())).toEqual(Array.from(plainValue));
      backward(checkpointed);
      expect(passes).toEqual([false, true]);
      const got = await Promise.all([g.x, g.w1, g.w2].map((t) => t.grad!.download()));
      for (let index = 0; index < 3; index++)
        expect(Array.from(got[index])).toEqual(Array.from(expected[index]));
      checkpointed.release();
    } finally {
      g.release();
    }
  });

  it("keeps none of fn's intermediates between forward and backward, and frees the recomputed ones", async () => {
    const g = graph();
    try {
      const measure = (useCheckpoint: boolean) => {
        const before = gpu.pool.snapshot().inUseBytes;
        const result = loss(g, useCheckpoint);
        const held = gpu.pool.snapshot().inUseBytes - before;
        backward(result);
        result.release();
        for (const t of [g.x, g.w1, g.w2]) {
          t.grad?.release();
          t.grad = null;
        }
        return { held, after: gpu.pool.snapshot().inUseBytes - before };
      };
      const plain = measure(false);
      const efficient = measure(true);
      // Plain keeps concat [5, 18] and matmul [5, 3] alive for backward; the checkpoint keeps only
      // its output (ReLU's, which plain keeps too).
      expect(plain.held - efficient.held).toBe(sizeClass(5 * 18 * 4) + sizeClass(5 * 3 * 4));
      expect(plain.after).toBe(0);
      expect(efficient.after).toBe(0);
    } finally {
      g.release();
    }
  });

  it("without gradients it runs fn once and records nothing", async () => {
    const g = graph();
    try {
      const passes: boolean[] = [];
      const a = noGrad(() => matmul(g.x, g.w1));
      const out = noGrad(() =>
        checkpoint(
          (inputs, pass) => {
            passes.push(pass.recomputing);
            return middle(inputs, g.w2);
          },
          [a, a],
          [g.w2],
        ),
      );
      expect(passes).toEqual([false]);
      expect(out.node).toBeNull();
      expect(out.requiresGrad).toBe(false);
      expect(out.shape).toEqual([5, 3]);
      out.release();
      a.release();
    } finally {
      g.release();
    }
  });

  it("refuses a function that reads a recorded tensor it was not given, and non-leaf parameters", () => {
    const g = graph();
    try {
      const a = matmul(g.x, g.w1);
      const hidden = relu(a);
      const out = checkpoint((inputs) => add(inputs[0], hidden), [a], []);
      const total = sum(out);
      expect(() => backward(total)).toThrow(/checkpoint: fn's "add" read tensor #\d+, which is recorded/);
      expect(() => checkpoint((inputs) => relu(inputs[0]), [g.x], [a])).toThrow(OpError);
      expect(() => checkpoint((inputs) => relu(inputs[0]), [g.x], [a])).toThrow(
        /parameters must be leaves; tensor #\d+ was produced by "matmul"/,
      );
      expect(() => checkpoint((inputs) => inputs[0], [g.x])).toThrow(/must return a new tensor/);
    } finally {
      g.release();
    }
  });
});
