/**
 * A small seeded generator (sfc32, seeded through splitmix32) so that splits, shuffles and the balanced
 * sampler give the same result for the same seed on every machine and runtime; Math.random cannot.
 */
export interface SeededRandom {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [0, bound). */
  integer(bound: number): number;
}

export function seededRandom(seed: number): SeededRandom {
  let state = seed >>> 0;
  const splitmix = () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let counter = 1;
  const nextUint32 = () => {
    const result = (a + b + counter) >>> 0;
    counter = (counter + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + result) >>> 0;
    return result;
  };
  // Discard the first outputs: sfc32 needs a few rounds to mix a seed.
  for (let round = 0; round < 12; round++) nextUint32();
  const next = () => nextUint32() / 4294967296;
  return { next, integer: (bound) => Math.floor(next() * bound) };
}

/** Fisher-Yates shuffle of a copy. */
export function shuffled<T>(items: readonly T[], random: SeededRandom): T[] {
  const copy = [...items];
  for (let index = copy.length - 1; index > 0; index--) {
    const other = random.integer(index + 1);
    [copy[index], copy[other]] = [copy[other], copy[index]];
  }
  return copy;
}

/** A seeded permutation of 0..count-1, e.g. the record order of one training epoch. */
export function shuffledOrder(count: number, seed: number): number[] {
  return shuffled(
    Array.from({ length: count }, (_, index) => index),
    seededRandom(seed),
  );
}
