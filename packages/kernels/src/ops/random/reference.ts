/**
 * The CPU side of the counter-based generator: Philox4x32-10 in exact 32-bit integer arithmetic, the
 * stream layout, and `randomReference`, the float64 reference of the GPU draws (uniforms are exactly
 * the float32 values the GPU writes; normals agree to the WGSL polynomials' accuracy). A reference
 * of its own kind: the draws take no inputs and have no gradient.
 */

export const PHILOX_M0 = 0xd2511f53;
export const PHILOX_M1 = 0xcd9e8d57;
export const PHILOX_W0 = 0x9e3779b9;
export const PHILOX_W1 = 0xbb67ae85;
export const TWO_POW_32 = 2 ** 32;
export const UNIFORM_SCALE = 2 ** -24;

/** High and low 32 bits of a 32x32-bit product, from 16-bit halves exactly as the WGSL does it. */
export function mulhilo32(a: number, b: number): [hi: number, lo: number] {
  const aLo = a & 0xffff;
  const aHi = a >>> 16;
  const bLo = b & 0xffff;
  const bHi = b >>> 16;
  const lowLow = aLo * bLo;
  const lowHigh = aLo * bHi;
  const highLow = aHi * bLo;
  const highHigh = aHi * bHi;
  const cross = (lowLow >>> 16) + (lowHigh & 0xffff) + (highLow & 0xffff);
  const hi = (highHigh + (lowHigh >>> 16) + (highLow >>> 16) + (cross >>> 16)) >>> 0;
  return [hi, Math.imul(a, b) >>> 0];
}

/** Philox4x32 with `rounds` rounds (10 is the standard, and what the GPU kernels use). */
export function philox4x32(
  counter: readonly [number, number, number, number],
  key: readonly [number, number],
  rounds = 10,
): [number, number, number, number] {
  let [c0, c1, c2, c3] = counter.map((word) => word >>> 0);
  let k0 = key[0] >>> 0;
  let k1 = key[1] >>> 0;
  for (let round = 0; round < rounds; round++) {
    if (round > 0) {
      k0 = (k0 + PHILOX_W0) >>> 0;
      k1 = (k1 + PHILOX_W1) >>> 0;
    }
    const [hi0, lo0] = mulhilo32(PHILOX_M0, c0);
    const [hi1, lo1] = mulhilo32(PHILOX_M1, c2);
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  return [c0, c1, c2, c3];
}

/** The Philox key of a seed: its low and high 32-bit words. */
export function philoxKey(seed: number): [number, number] {
  return [seed % TWO_POW_32, Math.floor(seed / TWO_POW_32)];
}

/** The four 32-bit words of stream block `block` (element offset block * 4). */
export function philoxBlock(seed: number, block: number): [number, number, number, number] {
  return philox4x32([block % TWO_POW_32, Math.floor(block / TWO_POW_32), 0, 0], philoxKey(seed));
}

/** A Philox word as a uniform in [0, 1): its top 24 bits times 2^-24, exact in float32. */
export function uniformFromBits(word: number): number {
  return (word >>> 8) * UNIFORM_SCALE;
}

/** Visits stream elements offset .. offset + count - 1, one Philox block at a time. */
function forEachBlock(
  seed: number,
  offset: number,
  count: number,
  visit: (words: [number, number, number, number], firstElement: number) => void,
): void {
  const firstBlock = Math.floor(offset / 4);
  const lastBlock = Math.floor((offset + count - 1) / 4);
  for (let block = firstBlock; block <= lastBlock; block++) visit(philoxBlock(seed, block), block * 4);
}

/** CPU references of the GPU draws (float64; uniforms are exactly the float32 values the GPU writes). */
export const randomReference = {
  uniform(count: number, seed: number, offset = 0): Float64Array {
    const values = new Float64Array(count);
    forEachBlock(seed, offset, count, (words, firstElement) => {
      for (let lane = 0; lane < 4; lane++) {
        const index = firstElement + lane - offset;
        if (index >= 0 && index < count) values[index] = uniformFromBits(words[lane]);
      }
    });
    return values;
  },
  normal(count: number, seed: number, offset = 0, mean = 0, std = 1): Float64Array {
    const values = new Float64Array(count);
    forEachBlock(seed, offset, count, (words, firstElement) => {
      const normals = boxMuller(words);
      for (let lane = 0; lane < 4; lane++) {
        const index = firstElement + lane - offset;
        if (index >= 0 && index < count) values[index] = mean + std * normals[lane];
      }
    });
    return values;
  },
};

/** Four standard normals from one Philox block, in float64. */
function boxMuller(words: [number, number, number, number]): [number, number, number, number] {
  const normals: [number, number, number, number] = [0, 0, 0, 0];
  for (let pair = 0; pair < 2; pair++) {
    const radius = Math.sqrt(-2 * Math.log(1 - uniformFromBits(words[2 * pair])));
    const angle = 2 * Math.PI * uniformFromBits(words[2 * pair + 1]);
    normals[2 * pair] = radius * Math.cos(angle);
    normals[2 * pair + 1] = radius * Math.sin(angle);
  }
  return normals;
}
