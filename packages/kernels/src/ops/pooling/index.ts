/**
 * 2-D pooling over [N, C, H, W]: average (count_include_pad, PyTorch's default), max (padding never
 * wins), and global average to [N, C]. Backward passes gather: every input pixel sums the output
 * gradients of the windows that cover it, so no atomics are needed. Layout like ops/softmax/:
 * `index.ts` (this file), `choose.ts`, `gather.ts` (the variant's WGSL), `geometry.ts` (the shared
 * window of ops/common/window.ts with pooling's defaults), `reference.ts`, `cost.ts`, `bench.ts`.
 */
import { needsGrad, record } from "../../runtime/autograd.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { requireF32 } from "../common/checks.ts";
import { windowOutputShape } from "../common/window.ts";
import type { PoolVariant } from "./choose.ts";
import { poolBackwardCost, poolCost } from "./cost.ts";
import {
  AVG_POOL_BACKWARD_WGSL,
  AVG_POOL_WGSL,
  geometryParams,
  MAX_POOL_BACKWARD_WGSL,
  MAX_POOL_WGSL,
} from "./gather.ts";
import { type Pool2dOptions, poolWindow } from "./geometry.ts";

export { choosePoolVariant, POOL_VARIANTS, type PoolVariant } from "./choose.ts";
export { poolBackwardCost, poolCost } from "./cost.ts";
export { type Pool2dOptions, poolWindow } from "./geometry.ts";
export { type PoolParams, poolOpReference, poolReference } from "./reference.ts";

/** The variant's kernels, exactly as launched (`cxr kernels dump pooling`). */
export const POOL_KERNELS: Readonly<Record<PoolVariant, Readonly<Record<string, string>>>> = {
  gather: {
    avgForward: AVG_POOL_WGSL,
    avgBackward: AVG_POOL_BACKWARD_WGSL,
    maxForward: MAX_POOL_WGSL,
    maxBackward: MAX_POOL_BACKWARD_WGSL,
  },
};

function pool(kind: "avg" | "max", x: Tensor, options: Pool2dOptions): Tensor {
  const op = kind === "avg" ? "avgPool2d" : "maxPool2d";
  requireF32(op, { input: x }, { x });
  const g = poolWindow(op, x.shape, options, { x });
  const output = Tensor.empty(x.gpu, windowOutputShape(g, g.channels));
  const argmax = kind === "max" ? Tensor.empty(x.gpu, output.shape, "u32") : null;
  launch(
    x.gpu,
    { name: op, code: kind === "avg" ? AVG_POOL_WGSL : MAX_POOL_WGSL },
    {
      bindings: argmax ? [x, output, argmax] : [x, output],
      params: geometryParams(output.size, g),
      workgroups: grid(output.size, 256),
      ...poolCost(g),
    },
  );
  if (!needsGrad(x)) {
    argmax?.release();
    return output;
  }
  record(
    op,
    [x],
    [output],
    ([gradOutput]) => {
      const gradInput = Tensor.empty(x.gpu, x.shape);
      launch(
        x.gpu,
        { name: `${op}Backward`, code: kind === "avg" ? AVG_POOL_BACKWARD_WGSL : MAX_POOL_BACKWARD_WGSL },
        {
          bindings: argmax ? [gradOutput!, gradInput, argmax] : [gradOutput!, gradInput],
          params: geometryParams(x.size, g),
          workgroups: grid(x.size, 256),
          ...poolBackwardCost(g),
        },
      );
      return [gradInput];
    },
    argmax ? [argmax] : [],
  );
  return output;
}

export const avgPool2d = (x: Tensor, options: Pool2dOptions) => pool("avg", x, options);
export const maxPool2d = (x: Tensor, options: Pool2dOptions) => pool("max", x, options);

/** Mean over H and W: [N, C, H, W] -> [N, C] (DenseNet's final pooling). */
export function globalAvgPool2d(x: Tensor): Tensor {
  if (x.rank !== 4) throw new OpError("globalAvgPool2d", "input must be [N, C, H, W]", { x });
  const pooled = pool("avg", x, { kernel: [x.shape[2], x.shape[3]] });
  // The [N, C, 1, 1] result is moved, not copied, into [N, C]; its tape node moves with it.
  const node = pooled.node;
  const flat = pooled.reshapeInto([x.shape[0], x.shape[1]]);
  if (node) {
    node.outputs = [flat];
    flat.requiresGrad = true;
    flat.node = node;
  }
  return flat;
}
