/**
 * Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3", SC 2011; the generator of Random123, cuRAND and PyTorch's CUDA backend).
 *
 * Stream layout: element `e` of the infinite stream for `seed` is word `e % 4` of
 * philox(counter = [e / 4 as 64 bits, lo word first, 0, 0], key = [seed lo, seed hi]). A draw of n
 * values at `offset` takes elements offset .. offset + n - 1, so results depend only on
 * (seed, offset, index), never on how the dispatch is laid out: two draws of n at 0 and m at n equal
 * one draw of n + m at 0. Each GPU invocation computes one Philox block (4 words) and writes the
 * elements of it that fall inside the draw.
 *
 * Uniforms are (word >> 8) * 2^-24 in [0, 1): exact in f32, so GPU and CPU agree bit for bit.
 * Normals use Box-Muller on the word pairs (0, 1) and (2, 3) of a block: z0 = r cos(2 pi u1),
 * z1 = r sin(2 pi u1), r = sqrt(-2 ln(1 - u0)); the pair elements 2, 3 likewise.
 *
 * Layout (ops/softmax/ is the worked example): `philox-blocks.ts` (the one variant's WGSL),
 * `reference.ts` (Philox on the CPU and the draws' reference), `cost.ts`. No choose.ts (one
 * variant) and no bench.ts (a draw per step is small next to the UNet).
 */

import type { Gpu } from "../../runtime/device.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, type Shape, sizeOf, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { randomCost } from "./cost.ts";
import { PHILOX_BLOCKS } from "./philox-blocks.ts";
import { philoxKey, TWO_POW_32 } from "./reference.ts";

export { randomCost } from "./cost.ts";
export {
  mulhilo32,
  philox4x32,
  philoxBlock,
  philoxKey,
  randomReference,
  uniformFromBits,
} from "./reference.ts";

/** The kernels by variant and pass, exactly as launched (`cxr kernels dump random`). */
export const RANDOM_KERNELS = { default: PHILOX_BLOCKS } as const;

function checkSeed(op: string, seed: number, shape: Shape): void {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new OpError(op, `seed must be an integer in [0, 2^53), got ${seed}`, { shape });
  }
}

function checkOffset(op: string, offset: number, size: number, shape: Shape): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + size)) {
    throw new OpError(op, `offset must be an integer with offset + size < 2^53, got ${offset}`, { shape });
  }
}

function draw(
  gpu: Gpu,
  kind: "uniform" | "normal",
  shape: Shape,
  seed: number,
  offset: number,
  mean: number,
  std: number,
): Tensor {
  const op = kind === "uniform" ? "randomUniform" : "randomNormal";
  checkSeed(op, seed, shape);
  const size = sizeOf(shape);
  checkOffset(op, offset, size, shape);
  if (!Number.isFinite(mean) || !Number.isFinite(std) || std < 0) {
    throw new OpError(op, `mean must be finite and std finite and >= 0, got mean ${mean}, std ${std}`, {
      shape,
    });
  }
  const output = Tensor.empty(gpu, shape);
  const firstBlock = Math.floor(offset / 4);
  const firstLane = offset % 4;
  const blocks = Math.ceil((firstLane + size) / 4);
  const [keyLo, keyHi] = philoxKey(seed);
  launch(
    gpu,
    { name: op, code: RANDOM_KERNELS.default[kind] },
    {
      bindings: [output],
      params: new Params()
        .u32(
          size,
          blocks,
          firstBlock % TWO_POW_32,
          Math.floor(firstBlock / TWO_POW_32),
          firstLane,
          keyLo,
          keyHi,
        )
        .f32(mean, std),
      workgroups: grid(blocks, 256),
      ...randomCost(kind, size),
    },
  );
  return output;
}

/** Uniform values in [0, 1) (multiples of 2^-24) from stream elements offset .. offset + size - 1. */
export function randomUniform(gpu: Gpu, shape: Shape, seed: number, offset = 0): Tensor {
  return draw(gpu, "uniform", shape, seed, offset, 0, 1);
}

/** Normal values mean + std * z, z standard normal by Box-Muller, from the same stream layout. */
export function randomNormal(gpu: Gpu, shape: Shape, seed: number, offset = 0, mean = 0, std = 1): Tensor {
  return draw(gpu, "normal", shape, seed, offset, mean, std);
}

/**
 * A seed and a position in its stream; each draw takes the next elements, so successive draws differ
 * and a run is reproducible from (seed, offset), which is all a checkpoint needs to store. The offset
 * advances by whole blocks (multiples of 4, as PyTorch's Philox offsets do) so no block's words feed
 * two draws (a uniform draw must not reuse the words behind a previous normal).
 */
export class Generator {
  private offset_: number;

  constructor(
    readonly gpu: Gpu,
    readonly seed: number,
    offset = 0,
  ) {
    checkSeed("Generator", seed, []);
    checkOffset("Generator", offset, 0, []);
    this.offset_ = offset;
  }

  get offset(): number {
    return this.offset_;
  }

  /** Moves to a stream position, e.g. one restored from a checkpoint. */
  set offset(value: number) {
    checkOffset("Generator", value, 0, []);
    this.offset_ = value;
  }

  /** Returns the current offset and moves past `size` elements, rounded up to whole blocks. */
  advance(size: number): number {
    const start = this.offset_;
    checkOffset("Generator", start, size, []);
    this.offset_ = start + Math.ceil(size / 4) * 4;
    return start;
  }

  uniform(shape: Shape): Tensor {
    return randomUniform(this.gpu, shape, this.seed, this.advance(sizeOf(shape)));
  }

  normal(shape: Shape, mean = 0, std = 1): Tensor {
    return randomNormal(this.gpu, shape, this.seed, this.advance(sizeOf(shape)), mean, std);
  }
}
