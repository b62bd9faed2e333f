/**
 * Which elementwise variant the optimizer kernels (AdamW, clipping's scale, EMA) run, as a pure
 * function of the tensors' buffer sizes (tested in test/kernels/optim.test.ts).
 */
import { OpError, type Tensor } from "../../runtime/tensor.ts";

/**
 * "vec4": each invocation updates 4 elements through vec4 loads. On the CPU adapter this halves the
 * time (llvmpipe makes each per-invocation load a scalar load with a bounds check, so fewer, wider
 * loads win: 4M-element EMA update 64 ms vs 142 ms, measured on lavapipe); on GPUs 16-byte loads
 * coalesce as well. The up to 3 lanes past the end fall in the buffer's padding (pooled buffers are
 * multiples of 16 bytes) and are never read as data. "scalar" is one element per invocation: the
 * naive reference, and the fallback for tensors over buffers that are not multiples of 16 bytes.
 */
export type ElementwiseVariant = "vec4" | "scalar";

export interface ElementwiseOptions {
  /** Force a variant (tests, benchmarks); default `chooseElementwiseVariant`. */
  variant?: ElementwiseVariant;
}

export function chooseElementwiseVariant(tensors: readonly Tensor[]): ElementwiseVariant {
  return tensors.every((tensor) => tensor.bufferFor("read").size % 16 === 0) ? "vec4" : "scalar";
}

export function resolveVariant(
  op: string,
  tensors: readonly Tensor[],
  forced?: ElementwiseVariant,
): ElementwiseVariant {
  if (forced === "vec4" && chooseElementwiseVariant(tensors) !== "vec4") {
    throw new OpError(op, "the vec4 variant needs buffers whose sizes are multiples of 16 bytes");
  }
  if (forced !== undefined && forced !== "vec4" && forced !== "scalar") {
    throw new OpError(op, `unknown variant "${forced as string}" (vec4, scalar)`);
  }
  return forced ?? chooseElementwiseVariant(tensors);
}

/** Invocations (and the `size` uniform) for `size` elements: one per element or per 4. */
export function elementwiseCount(variant: ElementwiseVariant, size: number): number {
  return variant === "vec4" ? Math.ceil(size / 4) : size;
}
