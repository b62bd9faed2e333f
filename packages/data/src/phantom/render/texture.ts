/**
 * Smooth value noise evaluated in body coordinates, so a patient's lung texture is the same at every
 * image size. Integer hashing only; no tables, no state.
 */
import { mix32 } from "../../random.ts";

export function latticeValue(ix: number, iy: number, seed: number): number {
  return mix32(Math.imul(ix, 0x27d4eb2d) ^ Math.imul(iy, 0x165667b1) ^ seed) / 4294967296;
}

/** Value noise in [0, 1) with smoothstep interpolation between unit lattice points. */
export function valueNoise(x: number, y: number, seed: number): number {
  const fx = Math.floor(x);
  const fy = Math.floor(y);
  const tx = x - fx;
  const ty = y - fy;
  const sx = tx * tx * (3 - 2 * tx);
  const sy = ty * ty * (3 - 2 * ty);
  const a = latticeValue(fx, fy, seed);
  const b = latticeValue(fx + 1, fy, seed);
  const c = latticeValue(fx, fy + 1, seed);
  const d = latticeValue(fx + 1, fy + 1, seed);
  return a + (b - a) * sx + (c - a) * sy + (a - b - c + d) * sx * sy;
}
