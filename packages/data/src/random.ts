/**
 * The one seeded generator for data and evaluation: the phantom, splits, epoch shuffles, the
 * balanced sampler and the classifier's bootstrap. sfc32 with 32-bit integer arithmetic only, so Bun
 * and Node give identical sequences. Streams are derived by hashing a key such as (seed, institution,
 * patient index, purpose), so a phantom dataset never depends on the order in which things were
 * generated and adding patients never changes the earlier ones. Never Math.random: the same seed
 * must give byte-identical datasets. (Kernels draw from their own Philox streams on the GPU.)
 */

/** Chris Wellons' "lowbias32" integer finaliser: every input bit affects every output bit. */
export function mix32(value: number): number {
  let h = value >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

export type KeyPart = string | number;

/** Hashes a key of strings and safe integers into 32 bits. */
export function hashKey(parts: readonly KeyPart[]): number {
  let h = 0x2545f491;
  for (const part of parts) {
    if (typeof part === "number") {
      if (!Number.isSafeInteger(part)) throw new Error(`random key part ${part} is not a safe integer`);
      const low = part >>> 0;
      const high = Math.floor(part / 4294967296) >>> 0;
      h = mix32(h ^ low);
      h = mix32((h + 0x9e3779b9) ^ high);
    } else {
      for (let i = 0; i < part.length; i++) h = mix32(h ^ part.charCodeAt(i));
      // A separator, so ("ab", "c") and ("a", "bc") hash differently.
      h = mix32(h ^ 0x85ebca6b);
    }
  }
  return h;
}

/** Chris Doty-Humphrey's sfc32: small, fast, passes PractRand; 32-bit integer arithmetic only. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    this.a = mix32(seed ^ 0x9e3779b9);
    this.b = mix32(this.a ^ 0x243f6a88);
    this.c = mix32(this.b ^ 0xb7e15162);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  /** A stream for one purpose, independent of every other key. */
  static derive(...parts: KeyPart[]): Rng {
    return new Rng(hashKey(parts));
  }

  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  uniform(low: number, high: number): number {
    return low + (high - low) * this.next();
  }

  /** Uniform integer in [low, high], both inclusive. */
  int(low: number, high: number): number {
    return low + Math.floor(this.next() * (high - low + 1));
  }

  /** Uniform integer in [0, bound) without modulo bias (the incomplete last block is rejected). */
  index(bound: number): number {
    if (!Number.isInteger(bound) || bound <= 0 || bound > 4294967296) {
      throw new Error(`random index bound must be an integer in [1, 2^32], got ${bound}`);
    }
    const limit = 4294967296 - (4294967296 % bound);
    for (;;) {
      const value = this.nextUint32();
      if (value < limit) return value % bound;
    }
  }

  chance(probability: number): boolean {
    return this.next() < probability;
  }

  /** Box-Muller; uses two uniforms and keeps no spare, so the stream position is easy to reason about. */
  normal(mean = 0, sd = 1): number {
    const u1 = 1 - this.next();
    const u2 = this.next();
    return mean + sd * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** A normal draw clamped to [low, high]: anatomy must stay plausible even in the tails. */
  clampedNormal(mean: number, sd: number, low: number, high: number): number {
    return Math.min(high, Math.max(low, this.normal(mean, sd)));
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("cannot pick from an empty list");
    return items[Math.floor(this.next() * items.length)];
  }

  /** Picks a key with probability proportional to its weight (keys in insertion order). */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const keys = Object.keys(weights) as K[];
    let total = 0;
    for (const key of keys) total += weights[key];
    if (!(total > 0)) throw new Error(`weights must have a positive sum: ${JSON.stringify(weights)}`);
    let target = this.next() * total;
    for (const key of keys) {
      target -= weights[key];
      if (target < 0) return key;
    }
    return keys[keys.length - 1];
  }

  /** Picks an index with probability proportional to its weight. */
  weightedIndex(weights: readonly number[]): number {
    let total = 0;
    for (const weight of weights) total += weight;
    if (!(total > 0)) throw new Error(`weights must have a positive sum: ${weights.join(", ")}`);
    let target = this.next() * total;
    for (let i = 0; i < weights.length; i++) {
      target -= weights[i];
      if (target < 0) return i;
    }
    return weights.length - 1;
  }

  /** Fisher-Yates shuffle in place. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      const swap = items[i];
      items[i] = items[j];
      items[j] = swap;
    }
    return items;
  }
}

/** A seeded permutation of 0..count-1, e.g. the record order of one training epoch. */
export function shuffledOrder(count: number, seed: number): number[] {
  return Rng.derive("order", seed).shuffle(Array.from({ length: count }, (_, index) => index));
}
