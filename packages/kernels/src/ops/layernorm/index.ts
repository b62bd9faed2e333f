/**
 * Layer normalisation over the last axis (Ba et al. 2016), as the UNet's transformer blocks and the
 * CLIP text encoder use it: x [..., D] normalised per row of D by its mean and biased variance, then
 * scaled and shifted per column by gamma, beta [D]. The op family's layout (as ops/softmax/):
 * - `index.ts` (this file): checks, the launch, the gradient;
 * - `choose.ts`: which variant runs; the variants are the norm core's two split-statistics designs
 *   (../norm-core/statistics-cpu-chunked.ts, statistics-gpu-workgroup.ts);
 * - `normalize.ts`, `backward.ts`: layer norm's own WGSL; `reference.ts`: float64; `cost.ts`; `bench.ts`.
 *
 * Forward: the shared moments kernels (rows split into chunks when D is large) and a normalise kernel.
 * Backward: per-row sums of gamma * dy and gamma * dy * x̂, then dx; gamma/beta gradients are column
 * sums over rows, split into row blocks and finished by a small kernel.
 */

import { needsGrad, record } from "../../runtime/autograd.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import {
  type AccessStyle,
  accessStyleOf,
  checkEps,
  lanesFor,
  loadsPerInvocation,
  momentStatistics,
  momentsPasses,
  type NormVariantOptions,
  rowSplit,
} from "../norm-core/index.ts";
import {
  layerNormColumnSumsSource,
  layerNormInputGradientSource,
  layerNormParameterGradientsSource,
  layerNormRowSumsSource,
} from "./backward.ts";
import { chooseLayerNormVariant, type LayerNormVariant } from "./choose.ts";
import { layerNormHalf } from "./half.ts";
import { layerNormalizeSource } from "./normalize.ts";

export { chooseLayerNormVariant, LAYER_NORM_VARIANTS, type LayerNormVariant } from "./choose.ts";
export { layerNormCost } from "./cost.ts";
export { type LayerNormParams, layerNormOpReference, layerNormReference } from "./reference.ts";

/** A variant's WGSL by pass: the core's statistics, then layer norm's own kernels per load width. */
function layerNormPasses(variant: LayerNormVariant): Readonly<Record<string, string>> {
  const passes: Record<string, string> = { ...momentsPasses(variant) };
  for (const [lanes, name] of [
    [4, "vec4"],
    [1, "scalar"],
  ] as const) {
    passes[`forward-normalize-${name}`] = layerNormalizeSource(lanes);
    passes[`backward-row-sums-${name}`] = layerNormRowSumsSource(lanes);
    passes[`backward-input-gradient-${name}`] = layerNormInputGradientSource(lanes);
    passes[`backward-column-sums-${name}`] = layerNormColumnSumsSource(lanes);
    passes[`backward-parameter-gradients-${name}`] = layerNormParameterGradientsSource(lanes);
  }
  return passes;
}

/** Every variant's WGSL by pass, exactly as launched (`cxr kernels dump layerNorm`). */
export const LAYER_NORM_KERNELS: Readonly<Record<LayerNormVariant, Readonly<Record<string, string>>>> = {
  "cpu-chunked": layerNormPasses("cpu-chunked"),
  "gpu-workgroup": layerNormPasses("gpu-workgroup"),
};

function checkParameter(op: string, name: string, parameter: Tensor | null, width: number, x: Tensor): void {
  if (!parameter) return;
  if (parameter.dtype !== "f32") {
    throw new OpError(op, `needs f32 ${name}, got ${parameter.dtype}`, { x, [name]: parameter });
  }
  if (parameter.rank !== 1 || parameter.size !== width) {
    throw new OpError(op, `${name} must have shape [${width}] (the last axis of x)`, {
      x,
      [name]: parameter,
    });
  }
}

/**
 * y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis of x [..., D];
 * gamma, beta: [D] or null (1 and 0). Differentiable in x, gamma and beta.
 */
export function layerNorm(
  x: Tensor,
  gamma: Tensor | null = null,
  beta: Tensor | null = null,
  eps = 1e-5,
  options: NormVariantOptions<LayerNormVariant> = {},
): Tensor {
  const op = "layerNorm";
  if (x.dtype === "f16") return layerNormHalf(x, gamma, beta, eps); // half.ts: inference only
  if (x.dtype !== "f32") throw new OpError(op, `needs f32 input, got ${x.dtype}`, { x });
  if (x.rank < 1) throw new OpError(op, "needs x of shape [..., D]", { x });
  const width = x.shape[x.rank - 1];
  checkParameter(op, "gamma", gamma, width, x);
  checkParameter(op, "beta", beta, width, x);
  checkEps(op, eps);
  const gpu = x.gpu;
  const variant = options.variant ?? chooseLayerNormVariant(gpu, x.shape);
  const rows = x.size / width;
  const stats = momentStatistics(
    op,
    x,
    rows,
    width,
    { statistics: rows, outer: 1, outerStride: 0 },
    eps,
    variant,
  );
  const lanes = lanesFor(width);
  const rowUnits = width / lanes;
  const style = accessStyleOf(gpu, variant);
  const perInvocation = loadsPerInvocation(style, rows * rowUnits);
  const y = Tensor.empty(gpu, x.shape);
  launch(
    gpu,
    { name: op, variant, code: layerNormalizeSource(lanes) },
    {
      bindings: [x, stats, gamma ?? x, beta ?? x, y],
      params: new Params().u32(rows * rowUnits, rowUnits, perInvocation, gamma ? 1 : 0, beta ? 1 : 0),
      workgroups: grid(Math.ceil((rows * rowUnits) / perInvocation), 64),
      flops: 3 * x.size,
      bytes: 8 * x.size,
    },
  );
  const inputs = [x, gamma, beta].filter((tensor): tensor is Tensor => tensor !== null);
  if (needsGrad(...inputs)) {
    record(
      op,
      inputs,
      [y],
      ([gradOutput]) => {
        const grads = layerNormBackward(x, gradOutput!, stats, gamma, beta, style);
        const result: (Tensor | null)[] = [grads.gradInput];
        if (gamma) result.push(grads.gradGamma);
        if (beta) result.push(grads.gradBeta);
        return result;
      },
      [stats],
    );
  } else {
    stats.release();
  }
  return y;
}

function layerNormBackward(
  x: Tensor,
  gradOutput: Tensor,
  stats: Tensor,
  gamma: Tensor | null,
  beta: Tensor | null,
  style: AccessStyle,
): { gradInput: Tensor | null; gradGamma: Tensor | null; gradBeta: Tensor | null } {
  const op = "layerNormBackward";
  const gpu = x.gpu;
  const width = x.shape[x.rank - 1];
  const rows = x.size / width;
  const lanes = lanesFor(width);
  const rowUnits = width / lanes;
  let gradInput: Tensor | null = null;
  let gradGamma: Tensor | null = null;
  let gradBeta: Tensor | null = null;
  if (x.requiresGrad) {
    const split = rowSplit(style, rows, rowUnits);
    const partials = Tensor.empty(gpu, [rows * split.chunks, 2]);
    launch(
      gpu,
      { name: op, variant: `row-sums-${style}`, code: layerNormRowSumsSource(lanes) },
      {
        bindings: [x, gradOutput, stats, gamma ?? x, partials],
        params: new Params().u32(
          rows,
          rowUnits,
          split.chunks,
          split.chunkStep,
          split.unitStep,
          split.span,
          gamma ? 1 : 0,
        ),
        workgroups: grid(rows * split.chunks, 64),
        flops: 5 * x.size,
        bytes: 8 * x.size,
      },
    );
    const perInvocation = loadsPerInvocation(style, rows * rowUnits);
    gradInput = Tensor.empty(gpu, x.shape);
    launch(
      gpu,
      { name: op, variant: `input-gradient-${style}`, code: layerNormInputGradientSource(lanes) },
      {
        bindings: [x, gradOutput, stats, gamma ?? x, partials, gradInput],
        params: new Params()
          .u32(rows * rowUnits, rowUnits, perInvocation, split.chunks, gamma ? 1 : 0)
          .f32(width),
        workgroups: grid(Math.ceil((rows * rowUnits) / perInvocation), 64),
        flops: 6 * x.size,
        bytes: 12 * x.size,
      },
    );
    partials.release();
  }
  const wantGamma = gamma?.requiresGrad ?? false;
  const wantBeta = beta?.requiresGrad ?? false;
  if (wantGamma || wantBeta) {
    // Enough blocks to fill the device, but about sqrt(rows) at most, so that neither the per-block
    // loop nor the final loop over blocks sums thousands of terms serially (f32 error grows with both).
    const target = gpu.kind === "cpu" ? 4096 : 65536;
    const blocks = Math.max(1, Math.min(rows, Math.ceil(target / rowUnits), Math.ceil(4 * Math.sqrt(rows))));
    const rowsPerBlock = Math.ceil(rows / blocks);
    const usedBlocks = Math.ceil(rows / rowsPerBlock);
    const partials = Tensor.empty(gpu, [usedBlocks, 2, width]);
    launch(
      gpu,
      { name: op, variant: "column-sums", code: layerNormColumnSumsSource(lanes) },
      {
        bindings: [x, gradOutput, stats, partials],
        params: new Params().u32(rows, rowUnits, usedBlocks, rowsPerBlock),
        workgroups: grid(usedBlocks * rowUnits, 64),
        flops: 4 * x.size,
        bytes: 8 * x.size,
      },
    );
    gradGamma = Tensor.empty(gpu, [width]);
    gradBeta = Tensor.empty(gpu, [width]);
    launch(
      gpu,
      { name: op, variant: "parameter-gradients", code: layerNormParameterGradientsSource(lanes) },
      {
        bindings: [partials, gradGamma, gradBeta],
        params: new Params().u32(rowUnits, usedBlocks),
        workgroups: grid(rowUnits, 64),
        flops: partials.size,
        bytes: 4 * partials.size + 8 * width,
      },
    );
    partials.release();
    if (!wantGamma) {
      gradGamma.release();
      gradGamma = null;
    }
    if (!wantBeta) {
      gradBeta.release();
      gradBeta = null;
    }
  }
  return { gradInput, gradGamma, gradBeta };
}
