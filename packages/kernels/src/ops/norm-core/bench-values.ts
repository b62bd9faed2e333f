/** Deterministic benchmark inputs for the norm benchmarks, so runs are comparable. */

/** Values in [-2, 2) + offset (xorshift). */
export function benchValues(count: number, seed: number, offset = 0): Float32Array {
  let state = seed >>> 0 || 1;
  const values = new Float32Array(count);
  for (let index = 0; index < count; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    values[index] = ((state >>> 0) / 4294967296) * 4 - 2 + offset;
  }
  return values;
}
