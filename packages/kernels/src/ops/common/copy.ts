/**
 * A plain buffer copy recorded in the current command batch: the one place ops that need "the same
 * values in a new tensor" get them (a reduction over nothing, the gradient of add/sub).
 */
import { type Shape, Tensor } from "../../runtime/tensor.ts";

/** A copy of `x` with another shape of the same size (a new buffer, so autograd may release it). */
export function copyTensor(x: Tensor, shape: Shape = x.shape): Tensor {
  return Tensor.empty(x.gpu, shape).copyFrom(x);
}
