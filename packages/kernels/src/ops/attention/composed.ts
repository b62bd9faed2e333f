/**
 * `attentionComposed`: the unfused matmul -> softmax -> matmul path, the benchmark baseline and a
 * second test oracle for the fused kernels.
 */
import { needsGrad } from "../../runtime/autograd.ts";
import type { Tensor } from "../../runtime/tensor.ts";
import { checkHalfOperands } from "../common/half.ts";
import { type MatmulVariant, matmul } from "../matmul/index.ts";
import { type SoftmaxVariant, softmax } from "../softmax/index.ts";
import { resolveAttention } from "./checks.ts";

export interface AttentionComposedOptions {
  scale?: number;
  keyMask?: Tensor;
  /** Force the variants of the parts (benchmarks); default: each op's own choice. */
  matmulVariant?: MatmulVariant;
  softmaxVariant?: SoftmaxVariant;
}

/**
 * The same attention composed from our other ops: scores = q k^T (matmul), probabilities =
 * softmax(scale * scores) with the key mask, output = probabilities v (matmul). It materialises the
 * [B, H, Lq, Lk] scores and probabilities (memory quadratic in length); the fused `attention` exists
 * to avoid exactly that. Kept as the benchmark baseline and a second test oracle; differentiable
 * through the parts' own backward passes. With f16 q, k and v (inference only) it runs the parts' f16
 * variants: scores and probabilities are stored in f16, every sum and the softmax computed in f32 (the
 * path of a head wider than the fused kernels hold, e.g. the SD VAE's single 512-wide head).
 */
export function attentionComposed(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionComposedOptions = {},
): Tensor {
  // f16 q, k, v run the f16 matmul and softmax (f32 scores and softmax arithmetic, f16 storage).
  const { scale, keyMask } = resolveAttention("attentionComposed", q, k, v, options, true);
  if (q.dtype === "f16") checkHalfOperands("attentionComposed", { q, k, v });
  const scores = matmul(q, k, { transposeB: true, variant: options.matmulVariant });
  const probabilities = softmax(scores, -1, { scale, mask: keyMask, variant: options.softmaxVariant });
  const output = matmul(probabilities, v, { variant: options.matmulVariant });
  if (!needsGrad(q, k, v)) {
    // Otherwise the tape owns them and backward() releases them.
    scores.release();
    probabilities.release();
  }
  return output;
}
