/**
 * The roofline kernel (bench/roofline.ts): its stored result equals the CPU computation of the same
 * fma chain, so the chain cannot be optimised away silently, and the measurement returns a rate.
 */
import { describe, expect, it } from "vitest";
import {
  compareRooflineOutput,
  dispatchRoofline,
  type FmaChain,
  fmaChainReference,
  measureRoofline,
  ROOFLINE_UNROLL,
  rooflineFlops,
  rooflineSource,
} from "../../packages/kernels/src/bench/roofline.ts";
import { Tensor } from "../../packages/kernels/src/runtime/tensor.ts";
import { gpu } from "./helpers.ts";

async function runChain(invocations: number, chain: FmaChain): Promise<Float32Array> {
  const device = await gpu();
  const out = Tensor.empty(device, [invocations, 4]);
  try {
    dispatchRoofline(device, out, chain);
    return await out.download();
  } finally {
    out.release();
  }
}

describe("fmaChainReference", () => {
  it("runs iterations x unroll steps of x * m + c per lane and sums the accumulators", () => {
    // 2 accumulators, lane 1 of invocation 3: starts 3 + 1 and 3 + 5, each + 2 per step.
    const chain = { accumulators: 2, iterations: 3, multiplier: 1, addend: 2 };
    const steps = 3 * ROOFLINE_UNROLL;
    expect(fmaChainReference(3, chain)[1]).toBe(4 + 2 * steps + (8 + 2 * steps));
    // A non-trivial multiplier, checked against a plain float64 loop (exact here: halves of integers).
    const halving = { accumulators: 1, iterations: 1, multiplier: 0.5, addend: 8 };
    let x = 2;
    for (let step = 0; step < ROOFLINE_UNROLL; step++) x = x * 0.5 + 8;
    expect(fmaChainReference(0, halving)[2]).toBe(Math.fround(x));
  });

  it("counts 2 FLOPs per lane per fma", () => {
    expect(rooflineFlops(10, { accumulators: 3, iterations: 2, multiplier: 1, addend: 1 })).toBe(
      10 * 2 * ROOFLINE_UNROLL * 3 * 4 * 2,
    );
  });
});

describe("roofline kernel", () => {
  const cases: { reason: string; invocations: number; chain: FmaChain }[] = [
    {
      reason: "one invocation, one accumulator",
      invocations: 1,
      chain: { accumulators: 1, iterations: 1, multiplier: 1, addend: 1 },
    },
    {
      reason: "a partial last workgroup (300 = 4 x 64 + 44), 3 accumulators, addend 3",
      invocations: 300,
      chain: { accumulators: 3, iterations: 7, multiplier: 1, addend: 3 },
    },
    {
      reason: "8 accumulators, more invocations than one base period (index mod 256)",
      invocations: 1000,
      chain: { accumulators: 8, iterations: 50, multiplier: 1, addend: 1 },
    },
    {
      reason: "multiplier -1: every step is x -> c - x (odd step count)",
      invocations: 70,
      chain: { accumulators: 2, iterations: 3, multiplier: -1, addend: 5 },
    },
  ];
  it.each(cases)("stores exactly the CPU chain: $reason", async ({ invocations, chain }) => {
    const values = await runChain(invocations, chain);
    expect(compareRooflineOutput(values, chain)).toBeNull();
    for (const index of [0, invocations - 1]) {
      expect(Array.from(values.subarray(index * 4, index * 4 + 4))).toEqual(fmaChainReference(index, chain));
    }
  });

  it("a result with fewer iterations than dispatched fails the check", async () => {
    const chain = { accumulators: 4, iterations: 6, multiplier: 1, addend: 1 };
    const values = await runChain(128, chain);
    expect(compareRooflineOutput(values, { ...chain, iterations: 5 })).toMatch(
      /invocation 0 lane 0: GPU .* CPU/,
    );
    values[77 * 4 + 2] += 1; // one lane of one invocation off by one
    expect(compareRooflineOutput(values, chain)).toMatch(/invocation 77 lane 2/);
  });

  it("rejects accumulator counts and chain lengths it cannot run exactly", async () => {
    expect(() => rooflineSource(0)).toThrow(/accumulators must be an integer in 1..16/);
    const device = await gpu();
    const out = Tensor.empty(device, [4, 4]);
    expect(() =>
      dispatchRoofline(device, out, { accumulators: 1, iterations: 2 ** 20, multiplier: 1, addend: 1 }),
    ).toThrow(/keep the check exact/);
    out.release();
  });

  it("measures a positive rate and keeps the best variant as the roofline", async () => {
    const roofline = await measureRoofline(await gpu(), {
      accumulators: [1, 2],
      invocations: 2048,
      targetMs: 5,
      repeats: 1,
    });
    expect(roofline.variants.map((variant) => variant.accumulators)).toEqual([1, 2]);
    expect(roofline.gflopsPerSecond).toBeGreaterThan(0);
    expect(roofline.gflopsPerSecond).toBe(
      Math.max(...roofline.variants.map((variant) => variant.gflopsPerSecond)),
    );
  });
});
