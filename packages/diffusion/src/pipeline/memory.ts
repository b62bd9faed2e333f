/**
 * What a generation reports of GPU memory: the buffer pool's bytes in use when it started (the
 * weights, plus anything else the caller holds), the pool's peak over the whole generation, and the
 * pool bytes each component's weights hold (parameters and buffers: 4 bytes a value in f32, 2 in f16,
 * each tensor's buffer in the pool's size class, a multiple of 256 B below 1 MiB). Kernels' private
 * scratch textures (the CPU matmul's packed operands) are not pool buffers and are not counted.
 */
import { type Module, sizeClass } from "@cxr/kernels";

export interface GenerationMemory {
  startBytes: number;
  peakBytes: number;
  /** Weight bytes per component; `vae` only in latent space. */
  weights: { textEncoder: number; unet: number; vae?: number };
}

/** The buffer pool bytes a module's parameters and buffers hold (what `inUseBytes` counts for them). */
export function weightBytes(module: Module): number {
  let total = 0;
  for (const tensor of module.stateTensors().values()) total += sizeClass(tensor.byteLength);
  return total;
}

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 2 : 0);

/**
 * One line for the CLIs: `GPU pool: X MB in use at the start (weights: text encoder A MB, UNet B MB,
 * VAE C MB; f16), peak Y MB during generation (text encoder, N UNet steps, VAE decode)`.
 */
export function formatGenerationMemory(memory: GenerationMemory, precision: "f32" | "f16"): string {
  const { weights } = memory;
  const parts = [`text encoder ${mb(weights.textEncoder)} MB`, `UNet ${mb(weights.unet)} MB`];
  if (weights.vae !== undefined) parts.push(`VAE ${mb(weights.vae)} MB`);
  const during =
    weights.vae !== undefined ? "text encoder, UNet steps, VAE decode" : "text encoder, UNet steps";
  return (
    `GPU pool: ${mb(memory.startBytes)} MB in use at the start (weights: ${parts.join(", ")}; ${precision}), ` +
    `peak ${mb(memory.peakBytes)} MB during generation (${during})`
  );
}
