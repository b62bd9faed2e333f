/**
 * Losses: mean squared error (the diffusion model's epsilon / v objective) and binary cross-entropy
 * with logits and a per-element mask (the classifier's multi-label head; the mask drops uncertain
 * CheXpert labels under the U-Ignore policy).
 *
 * A reduced loss is computed in two dispatches: each invocation sums one contiguous chunk, then one
 * invocation sums the (at most 4096) chunk partials (chunks.ts). The scalar result never leaves the GPU.
 *
 * Layout (ops/softmax/ is the worked example): `mse.ts` and `bce.ts` (each op's kernels; one variant
 * each, the passes follow from the reduction), `chunks.ts`, `reference.ts`, `cost.ts`. No choose.ts
 * (nothing to choose) and no bench.ts (a loss is one pass over a latent; the UNet dominates a step).
 */
import { needsGrad, record } from "../../runtime/autograd.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { BCE_KERNELS } from "./bce.ts";
import { lossChunkLength } from "./chunks.ts";
import { bceBackwardCost, bcePartialsCost, lossCost, lossFinalizeCost } from "./cost.ts";
import { MSE_KERNELS } from "./mse.ts";
import type { LossReduction } from "./reference.ts";

export {
  type BceParams,
  bceOpReference,
  bceWithLogitsReference,
  type LossReduction,
  type MseParams,
  mseLossReference,
  mseOpReference,
} from "./reference.ts";

const LOSS_REDUCTIONS: readonly LossReduction[] = ["mean", "sum", "none"];

/** The kernels by variant and pass, exactly as launched (`cxr kernels dump loss`). */
export const LOSS_KERNELS = {
  default: {
    mseElementwise: MSE_KERNELS.elementwise,
    msePartials: MSE_KERNELS.partials,
    mseFinalize: MSE_KERNELS.finalize,
    mseBackward: MSE_KERNELS.backward,
    bcePartials: BCE_KERNELS.partials,
    bceFinalize: BCE_KERNELS.finalize,
    bceBackward: BCE_KERNELS.backward,
  },
} as const;

function checkPair(op: string, a: Tensor, b: Tensor, names: [string, string]): void {
  for (const [name, tensor] of [
    [names[0], a],
    [names[1], b],
  ] as const) {
    if (tensor.dtype !== "f32")
      throw new OpError(op, `needs f32 ${name}, got ${tensor.dtype}`, { [name]: tensor });
  }
  if (a.shape.length !== b.shape.length || a.shape.some((extent, axis) => extent !== b.shape[axis])) {
    throw new OpError(op, `${names[0]} and ${names[1]} must have the same shape`, {
      [names[0]]: a,
      [names[1]]: b,
    });
  }
}

/**
 * Mean squared error. "mean" and "sum" return a [1] tensor; "none" the elementwise squares.
 * Differentiable in both operands.
 */
export function mseLoss(prediction: Tensor, target: Tensor, reduction: LossReduction = "mean"): Tensor {
  const op = "mseLoss";
  checkPair(op, prediction, target, ["prediction", "target"]);
  if (!LOSS_REDUCTIONS.includes(reduction)) {
    throw new OpError(op, `reduction must be "mean", "sum" or "none", got ${JSON.stringify(reduction)}`);
  }
  const gpu = prediction.gpu;
  const size = prediction.size;
  let loss: Tensor;
  if (reduction === "none") {
    loss = Tensor.empty(gpu, prediction.shape);
    launch(
      gpu,
      { name: op, variant: "elementwise", code: LOSS_KERNELS.default.mseElementwise },
      {
        bindings: [prediction, target, loss],
        params: new Params().u32(size),
        workgroups: grid(size, 64),
        ...lossCost(size, 3),
      },
    );
  } else {
    const chunkLength = lossChunkLength(size);
    const chunks = Math.ceil(size / chunkLength);
    const partials = Tensor.empty(gpu, [chunks]);
    launch(
      gpu,
      { name: op, variant: "chunked", code: LOSS_KERNELS.default.msePartials },
      {
        bindings: [prediction, target, partials],
        params: new Params().u32(size, chunks, chunkLength),
        workgroups: grid(chunks, 64),
        ...lossCost(size, 2),
      },
    );
    loss = Tensor.empty(gpu, [1]);
    launch(
      gpu,
      { name: op, variant: "finalize", code: LOSS_KERNELS.default.mseFinalize },
      {
        bindings: [partials, loss],
        params: new Params().u32(chunks).f32(reduction === "mean" ? 1 / size : 1),
        workgroups: [1],
        ...lossFinalizeCost(chunks, 1),
      },
    );
    partials.release();
  }
  if (needsGrad(prediction, target)) {
    record(op, [prediction, target], [loss], ([gradOutput]) => {
      const gradientOf = (sign: 1 | -1) => {
        const gradInput = Tensor.empty(gpu, prediction.shape);
        // d/dtarget = -d/dprediction: swap the operands instead of negating.
        const [first, second] = sign === 1 ? [prediction, target] : [target, prediction];
        launch(
          gpu,
          {
            name: `${op}Backward`,
            variant: reduction === "none" ? "elementwise" : "reduced",
            code: LOSS_KERNELS.default.mseBackward,
          },
          {
            bindings: [first, second, gradOutput!, gradInput],
            params: new Params()
              .u32(size, reduction === "none" ? 1 : 0)
              .f32(reduction === "mean" ? 1 / size : 1),
            workgroups: grid(size, 64),
            ...lossCost(size, 4),
          },
        );
        return gradInput;
      };
      return [prediction.requiresGrad ? gradientOf(1) : null, target.requiresGrad ? gradientOf(-1) : null];
    });
  }
  return loss;
}

/**
 * Binary cross-entropy on logits, averaged over unmasked elements: Σ m·ℓ / Σ m with
 * ℓ = max(z, 0) - z·y + log(1 + e^-|z|). `mask` (same shape, 1 = keep, 0 = ignore; other values act
 * as weights) defaults to all ones. When every element is masked the loss and its gradients are 0.
 * Returns a [1] tensor; differentiable in logits and targets (not the mask).
 */
export function bceWithLogitsLoss(logits: Tensor, targets: Tensor, mask: Tensor | null = null): Tensor {
  const op = "bceWithLogitsLoss";
  checkPair(op, logits, targets, ["logits", "targets"]);
  if (mask) checkPair(op, logits, mask, ["logits", "mask"]);
  const gpu = logits.gpu;
  const size = logits.size;
  const chunkLength = lossChunkLength(size);
  const chunks = Math.ceil(size / chunkLength);
  const partials = Tensor.empty(gpu, [chunks, 2]);
  launch(
    gpu,
    { name: op, variant: "chunked", code: LOSS_KERNELS.default.bcePartials },
    {
      bindings: [logits, targets, mask ?? logits, partials],
      params: new Params().u32(size, chunks, chunkLength, mask ? 1 : 0),
      workgroups: grid(chunks, 64),
      ...bcePartialsCost(size, mask !== null),
    },
  );
  const loss = Tensor.empty(gpu, [1]);
  const weight = Tensor.empty(gpu, [1]);
  launch(
    gpu,
    { name: op, variant: "finalize", code: LOSS_KERNELS.default.bceFinalize },
    {
      bindings: [partials, loss, weight],
      params: new Params().u32(chunks),
      workgroups: [1],
      ...lossFinalizeCost(chunks, 2),
    },
  );
  partials.release();
  if (needsGrad(logits, targets)) {
    record(
      op,
      [logits, targets],
      [loss],
      ([gradOutput]) => {
        const gradientOf = (withRespectToLabels: boolean) => {
          const gradInput = Tensor.empty(gpu, logits.shape);
          launch(
            gpu,
            {
              name: `${op}Backward`,
              variant: withRespectToLabels ? "targets" : "logits",
              code: LOSS_KERNELS.default.bceBackward,
            },
            {
              bindings: [logits, targets, mask ?? logits, weight, gradOutput!, gradInput],
              params: new Params().u32(size, mask ? 1 : 0, withRespectToLabels ? 1 : 0),
              workgroups: grid(size, 64),
              ...bceBackwardCost(size, mask !== null),
            },
          );
          return gradInput;
        };
        return [
          logits.requiresGrad ? gradientOf(false) : null,
          targets.requiresGrad ? gradientOf(true) : null,
        ];
      },
      [weight],
    );
  } else {
    weight.release();
  }
  return loss;
}
