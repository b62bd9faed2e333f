/** Deterministic benchmark inputs (xorshift), so runs and machines are comparable. */

/** `count` values in [-range, range) + offset from `seed`. */
export function benchValues(count: number, seed: number, range = 1, offset = 0): Float32Array {
  let state = seed >>> 0 || 1;
  const values = new Float32Array(count);
  for (let index = 0; index < count; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    values[index] = ((state >>> 0) / 4294967296) * 2 * range - range + offset;
  }
  return values;
}
