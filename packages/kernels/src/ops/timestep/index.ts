/**
 * Sinusoidal timestep embedding, as diffusers' `get_timestep_embedding` computes it for the UNet:
 *
 *   half = floor(dim / 2)
 *   f_j  = exp(-ln(maxPeriod) * j / (half - downscaleFreqShift)),  j = 0 .. half-1
 *   a_bj = scale * t_b * f_j
 *   emb  = [sin(a) | cos(a)]  (flipSinToCos: [cos(a) | sin(a)]), zero-padded by one column for odd dim
 *
 * timesteps f32 [B] -> [B, dim]. The frequencies are rounded to f32 on the CPU in the order PyTorch
 * rounds them (exponent, division, exp each in float32), so both sides multiply the same numbers.
 * The gradient with respect to the timesteps exists (d sin(a)/dt = scale f cos(a), ...) and is
 * recorded when the timesteps require one; training never asks for it.
 *
 * Layout (ops/softmax/ is the worked example): `options.ts` (options, frequency table),
 * `sinusoid.ts` (the one variant's WGSL), `reference.ts`, `cost.ts`. No choose.ts (one variant) and
 * no bench.ts (a [batch, 320] table per step is not worth timing).
 */
import { needsGrad, record } from "../../runtime/autograd.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { timestepEmbeddingBackwardCost, timestepEmbeddingCost } from "./cost.ts";
import { resolveTimestepOptions, type TimestepEmbeddingOptions, timestepFrequencies } from "./options.ts";
import { SINUSOID } from "./sinusoid.ts";

export { type TimestepEmbeddingOptions, timestepFrequencies } from "./options.ts";
export { type TimestepParams, timestepEmbeddingReference, timestepOpReference } from "./reference.ts";

/** The kernels by variant and pass, exactly as launched (`cxr kernels dump timestep`). */
export const TIMESTEP_KERNELS = { default: SINUSOID } as const;

/** timesteps f32 [B] -> [B, dim]. `frequencies` from `timestepFrequencies` may be passed in (kept on the GPU). */
export function timestepEmbedding(
  timesteps: Tensor,
  dim: number,
  options: TimestepEmbeddingOptions = {},
  frequencies?: Tensor,
): Tensor {
  const resolved = resolveTimestepOptions(dim, options);
  if (timesteps.dtype !== "f32" || timesteps.rank !== 1) {
    throw new OpError("timestepEmbedding", "timesteps must be an f32 tensor [batch]", { timesteps });
  }
  const half = Math.floor(dim / 2);
  const gpu = timesteps.gpu;
  const ownFrequencies = frequencies === undefined;
  const table = frequencies ?? Tensor.upload(gpu, timestepFrequencies(dim, options), [half]);
  if (table.rank !== 1 || table.shape[0] !== half || table.dtype !== "f32") {
    throw new OpError("timestepEmbedding", `frequencies must be f32 [${half}]`, { frequencies: table });
  }
  const batch = timesteps.shape[0];
  const output = Tensor.empty(gpu, [batch, dim]);
  const flip = resolved.flipSinToCos ? 1 : 0;
  launch(
    gpu,
    { name: "timestepEmbedding", code: TIMESTEP_KERNELS.default.forward },
    {
      bindings: [timesteps, table, output],
      params: new Params().u32(output.size, dim, half, flip).f32(resolved.scale),
      workgroups: grid(output.size, 256),
      ...timestepEmbeddingCost(batch, dim, half),
    },
  );
  if (needsGrad(timesteps)) {
    record("timestepEmbedding", [timesteps], [output], ([gradOutput]) => {
      const gradTimesteps = Tensor.empty(gpu, [batch]);
      launch(
        gpu,
        { name: "timestepEmbeddingBackward", code: TIMESTEP_KERNELS.default.backward },
        {
          bindings: [timesteps, table, gradOutput!, gradTimesteps],
          params: new Params().u32(batch, dim, half, flip).f32(resolved.scale),
          workgroups: grid(batch, 64),
          ...timestepEmbeddingBackwardCost(batch, dim, half),
        },
      );
      if (ownFrequencies) table.release();
      return [gradTimesteps];
    });
  } else if (ownFrequencies) {
    table.release();
  }
  return output;
}
