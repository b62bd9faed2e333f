/** Shape, scale and mask checks shared by the fused op and the composition. */
import { OpError, type Tensor } from "../../runtime/tensor.ts";
import type { AttentionShape } from "./cost.ts";

export interface AttentionKernelOptions {
  /** Multiplies q.k before the softmax. Default 1/sqrt(D). */
  scale?: number;
  /** [B, Lk]: 1 keeps a key, 0 drops it. A query whose keys are all dropped outputs zeros. */
  keyMask?: Tensor;
}

/**
 * Checks q, k and v (f32, rank 4, matching batch, heads, head dimension and key length). With
 * `halfToo`, f16 q, k and v pass as well (the composition, whose parts have f16 variants); the parts
 * then check that all three are f16.
 */
export function attentionShapeOf(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  op = "attention",
  halfToo = false,
): AttentionShape {
  for (const [name, tensor] of [
    ["q", q],
    ["k", k],
    ["v", v],
  ] as const) {
    if (tensor.dtype !== "f32" && !(halfToo && tensor.dtype === "f16"))
      throw new OpError(op, `needs f32 ${name}, got ${tensor.dtype}`, { q, k, v });
    if (tensor.rank !== 4)
      throw new OpError(op, `${name} must be [batch, heads, length, headDim]`, { q, k, v });
  }
  const [batch, heads, queryLength, headDim] = q.shape;
  const [keyBatch, keyHeads, keyLength, keyDim] = k.shape;
  if (keyBatch !== batch || keyHeads !== heads || keyDim !== headDim) {
    throw new OpError(op, "k must match q in batch, heads and head dimension", { q, k });
  }
  if (v.shape[0] !== batch || v.shape[1] !== heads || v.shape[2] !== keyLength || v.shape[3] !== headDim) {
    throw new OpError(op, "v must have the shape of k", { k, v });
  }
  return { batch, heads, queryLength, keyLength, headDim };
}

/** Shape, scale and mask checked; shared by the fused op and the composition. */
export interface ResolvedAttention {
  shape: AttentionShape;
  scale: number;
  keyMask: Tensor | undefined;
}

export function resolveAttention(
  op: string,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: { scale?: number; keyMask?: Tensor },
  halfToo = false,
): ResolvedAttention {
  const shape = attentionShapeOf(q, k, v, op, halfToo);
  const scale = options.scale ?? 1 / Math.sqrt(shape.headDim);
  if (!Number.isFinite(scale)) throw new OpError(op, `scale must be finite, got ${scale}`, { q });
  const keyMask = options.keyMask;
  if (keyMask) {
    if (keyMask.dtype !== "f32") {
      throw new OpError(op, `needs an f32 keyMask, got ${keyMask.dtype}`, { keyMask });
    }
    if (keyMask.rank !== 2 || keyMask.shape[0] !== shape.batch || keyMask.shape[1] !== shape.keyLength) {
      throw new OpError(op, "keyMask must be [batch, keyLength]", { q, k, keyMask });
    }
  }
  return { shape, scale, keyMask };
}
