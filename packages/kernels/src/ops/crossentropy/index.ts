/**
 * Softmax cross-entropy over the last axis with integer class targets and a per-row mask (a
 * classifier's single-label head, e.g. race in 4 classes, where unknown rows are masked out):
 *   loss = Σ_r mask_r * (logsumexp(z_r) - z_r[target_r]) / Σ_r mask_r     (0 when every row is masked)
 *   dloss/dz_r = mask_r * (softmax(z_r) - onehot(target_r)) / Σ mask * gradOutput.
 * One invocation per row computes its loss (max-shifted, never exponentiating a positive number);
 * one invocation sums the rows (a head's batch is small). Targets are u32 class indices.
 *
 * Layout (ops/softmax/ is the worked example): `rows.ts` (the one variant: rows, sum and backward
 * passes sharing one row-statistics function), `reference.ts`, `cost.ts`. No choose.ts (one
 * variant) and no bench.ts (a [batch, 4] head is not worth timing).
 */
import { needsGrad, record } from "../../runtime/autograd.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { crossEntropyCost, crossEntropySumCost } from "./cost.ts";
import { ROWS_KERNELS } from "./rows.ts";

export { crossEntropyCost, crossEntropySumCost } from "./cost.ts";
export {
  type CrossEntropyParams,
  crossEntropyOpReference,
  softmaxCrossEntropyReference,
} from "./reference.ts";

/** The kernels by variant and pass, exactly as launched (`cxr kernels dump crossentropy`). */
export const CROSS_ENTROPY_KERNELS = { default: ROWS_KERNELS } as const;

/**
 * logits [rows, classes] (f32), targets [rows] (u32 class indices), mask [rows] (f32 weights, e.g.
 * 0 for an unknown class) -> mean over the mask, a [1] tensor. Differentiable in the logits.
 */
export function softmaxCrossEntropy(logits: Tensor, targets: Tensor, mask: Tensor): Tensor {
  const op = "softmaxCrossEntropy";
  const operands = { logits, targets, mask };
  if (logits.rank !== 2) throw new OpError(op, "needs logits of shape [rows, classes]", operands);
  const [rows, classes] = logits.shape;
  if (logits.dtype !== "f32") throw new OpError(op, `needs f32 logits, got ${logits.dtype}`, operands);
  if (targets.dtype !== "u32")
    throw new OpError(op, `needs u32 class indices, got ${targets.dtype}`, operands);
  if (mask.dtype !== "f32") throw new OpError(op, `needs an f32 mask, got ${mask.dtype}`, operands);
  if (targets.size !== rows || mask.size !== rows)
    throw new OpError(op, `targets and mask need ${rows} values, one per row`, operands);
  const gpu = logits.gpu;
  const kernels = CROSS_ENTROPY_KERNELS.default;
  const rowLoss = Tensor.empty(gpu, [rows]);
  const params = new Params().u32(rows, classes);
  launch(
    gpu,
    { name: op, variant: "rows", code: kernels.rows },
    {
      bindings: [logits, targets, mask, rowLoss],
      params,
      workgroups: grid(rows, 64),
      ...crossEntropyCost(rows, classes),
    },
  );
  const loss = Tensor.empty(gpu, [1]);
  const weight = Tensor.empty(gpu, [1]);
  launch(
    gpu,
    { name: op, variant: "sum", code: kernels.sum },
    {
      bindings: [rowLoss, mask, loss, weight],
      params: new Params().u32(rows),
      workgroups: [1],
      ...crossEntropySumCost(rows),
    },
  );
  rowLoss.release();
  if (!needsGrad(logits)) {
    weight.release();
    return loss;
  }
  record(
    op,
    [logits],
    [loss],
    ([gradOutput]) => {
      const gradLogits = Tensor.empty(gpu, logits.shape);
      launch(
        gpu,
        { name: `${op}Backward`, code: kernels.backward },
        {
          bindings: [logits, targets, mask, weight, gradOutput!, gradLogits],
          params: new Params().u32(rows, classes),
          workgroups: grid(rows, 64),
          ...crossEntropyCost(rows, classes),
        },
      );
      return [gradLogits];
    },
    [weight],
  );
  return loss;
}
