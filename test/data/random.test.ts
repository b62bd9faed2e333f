/**
 * The one seeded generator of @cxr/data (src/random.ts), shared by the phantom, splits, epoch order,
 * the balanced sampler and the classifier's bootstrap. Its first outputs are pinned (taken from the
 * phantom's generator before it moved here), so a change that would alter every phantom dataset
 * fails here first.
 */
import { describe, expect, it } from "vitest";
import { Rng, shuffledOrder } from "../../packages/data/src/random.ts";

describe("Rng", () => {
  it("keeps the phantom's sequences", () => {
    const plain = new Rng(7);
    expect(Array.from({ length: 4 }, () => plain.nextUint32())).toEqual([
      3739700628, 2958765885, 1608398704, 1179814336,
    ]);
    const derived = Rng.derive("phantom", 7, "highland", 12);
    expect(Array.from({ length: 4 }, () => derived.nextUint32())).toEqual([
      761792980, 2878379689, 291442658, 1202016004,
    ]);
  });

  it("index(bound) covers [0, bound) evenly and rejects impossible bounds", () => {
    const random = Rng.derive("index test", 1);
    const counts = new Array(3).fill(0);
    for (let draw = 0; draw < 30000; draw++) counts[random.index(3)]++;
    for (const count of counts) expect(Math.abs(count - 10000)).toBeLessThan(400); // > 4.5 sd
    expect(random.index(1)).toBe(0);
    for (const bad of [0, -1, 1.5, 2 ** 32 + 1, Number.NaN])
      expect(() => random.index(bad)).toThrow(/random index bound must be an integer in \[1, 2\^32\]/);
  });

  it("derives independent streams from keys and refuses unsafe seeds", () => {
    const first = Rng.derive("bootstrap", 1).nextUint32();
    expect(Rng.derive("bootstrap", 1).nextUint32()).toBe(first);
    expect(Rng.derive("bootstrap", 2).nextUint32()).not.toBe(first);
    expect(Rng.derive("splits", 1).nextUint32()).not.toBe(first);
    expect(Rng.derive("bootstrap", 2 ** 40).nextUint32()).not.toBe(Rng.derive("bootstrap", 0).nextUint32());
    expect(() => Rng.derive("bootstrap", 0.5)).toThrow(/random key part 0.5 is not a safe integer/);
  });

  it("shuffledOrder is a seeded permutation", () => {
    const order = shuffledOrder(50, 3);
    expect([...order].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, index) => index));
    expect(shuffledOrder(50, 3)).toEqual(order);
    expect(shuffledOrder(50, 4)).not.toEqual(order);
  });
});
