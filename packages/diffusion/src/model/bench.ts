/**
 * Times the model's training computation on our kernels: text encoder + UNet forward, MSE to the
 * noise, backward (gradients of every parameter), each waited for with `gpu.sync()`. Random weights,
 * prompts from the phantom's vocabulary, random images and timesteps. The optimizer step is not
 * included (see the kernels README for AdamW's cost).
 *
 *   bun packages/diffusion/src/model/bench.ts [--config phantom-small] [--batch 8] [--steps 3] [--warmup 1]
 *
 * `--unet-step` instead times one inference UNet call (`benchmarkUnetStep`: random weights, no text
 * encoder; batch 2 = one image with classifier-free guidance) with the buffer pool's peak:
 *
 *   bun packages/diffusion/src/model/bench.ts --unet-step --config sd2-base [--batch 2] [--calls 1] [--sample-size 64] [--precision f32|f16]
 */
import { readFileSync } from "node:fs";
import {
  backward,
  defaultGpu,
  type Gpu,
  mseLoss,
  noGrad,
  ParameterInit,
  randomNormal,
  Tensor,
  tidy,
  withParameterDtype,
} from "@cxr/kernels";
import type { DiffusionModelConfig } from "./config.ts";
import { diffusionConfig } from "./config.ts";
import { createDiffusionModel, type Precision, PrecisionError } from "./model.ts";
import { WordTokenizer } from "./tokenizer.ts";
import { UNet2DConditionModel } from "./unet.ts";

export interface ModelBenchOptions {
  batch?: number;
  steps?: number;
  warmup?: number;
  seed?: number;
}

export interface ModelBenchResult {
  config: string;
  batch: number;
  steps: number;
  parameters: { textEncoder: number; unet: number; total: number };
  /** Medians over the timed steps, milliseconds. */
  forwardMs: number;
  backwardMs: number;
  stepMs: number;
  adapter: string;
}

const BENCH_PROMPTS = [
  "72 year old BLACK female. Cardiomegaly and small left pleural effusion.",
  "45 year old WHITE male. No acute cardiopulmonary abnormality.",
  "60 year old ASIAN female. Right upper lobe consolidation with left pleural effusion.",
  "38 year old HISPANIC male. Moderate pulmonary edema. Endotracheal tube and enteric tube in place.",
];

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

export async function benchmarkModel(
  gpu: Gpu,
  config: DiffusionModelConfig,
  options: ModelBenchOptions = {},
): Promise<ModelBenchResult> {
  const batch = options.batch ?? 8;
  const steps = options.steps ?? 3;
  const warmup = options.warmup ?? 1;
  const tokenizer = WordTokenizer.fromPrompts(BENCH_PROMPTS, { maxLength: config.textEncoder.maxPositions });
  const model = createDiffusionModel(gpu, config, tokenizer, options.seed ?? 0);
  const channels = config.unet.inChannels;
  const side = config.unet.sampleSize;
  const forward: number[] = [];
  const backwardTimes: number[] = [];
  const prompts = Array.from({ length: batch }, (_, index) => BENCH_PROMPTS[index % BENCH_PROMPTS.length]);
  for (let step = 0; step < warmup + steps; step++) {
    const sample = randomNormal(gpu, [batch, channels, side, side], 1000 + step);
    const noise = randomNormal(gpu, [batch, channels, side, side], 2000 + step);
    const timesteps = Tensor.upload(
      gpu,
      Float32Array.from(
        { length: batch },
        (_, index) => (step * 97 + index * 131) % config.schedule.numTrainTimesteps,
      ),
      [batch],
    );
    await gpu.sync();
    const start = performance.now();
    const { hiddenStates, ids } = model.encodePrompts(prompts, { warn: () => {} });
    const prediction = model.unet.forward(sample, timesteps, hiddenStates);
    const loss = mseLoss(prediction, noise);
    await gpu.sync();
    const middle = performance.now();
    backward(loss);
    await gpu.sync();
    const end = performance.now();
    if (step >= warmup) {
      forward.push(middle - start);
      backwardTimes.push(end - middle);
    }
    for (const parameter of model.parameters()) {
      parameter.grad?.release();
      parameter.grad = null;
    }
    for (const tensor of [sample, noise, timesteps, ids, loss]) tensor.release();
  }
  const result: ModelBenchResult = {
    config: config.name,
    batch,
    steps,
    parameters: model.parameterCounts(),
    forwardMs: median(forward),
    backwardMs: median(backwardTimes),
    stepMs: median(forward.map((value, index) => value + backwardTimes[index])),
    adapter: `${gpu.adapter.description || gpu.adapter.device} (${gpu.kind})`,
  };
  model.dispose();
  return result;
}

export interface UnetStepBenchResult {
  config: string;
  /** Latent batch of the UNet call (2 x images with classifier-free guidance). */
  batch: number;
  sample: number[];
  unetParameters: number;
  /** Seconds to build the UNet with random weights (host initialisation + upload). */
  buildSeconds: number;
  /** Each call's synced wall time; the first includes shader compilation. */
  callSeconds: number[];
  precision: Precision;
  /** Buffer pool bytes: the weights alone, and the peak during the calls. */
  weightBytes: number;
  peakBytes: number;
  adapter: string;
}

/**
 * One denoising step's UNet call at inference (no tape): random weights, latents [batch, C, S, S] with
 * S the config's sampleSize, random text context [batch, maxPositions, crossAttentionDim], timestep
 * 500. `batch` 2 is one image with classifier-free guidance. The text encoder is not built or timed.
 */
export async function benchmarkUnetStep(
  gpu: Gpu,
  config: DiffusionModelConfig,
  options: {
    batch?: number;
    calls?: number;
    sampleSize?: number;
    /** "f16": the UNet built with f16 weights, on the f16 kernels (needs shader-f16). */
    precision?: Precision;
    /** Progress lines (phase and elapsed seconds), e.g. to stderr. */
    log?: (line: string) => void;
  } = {},
): Promise<UnetStepBenchResult> {
  const log = options.log ?? (() => {});
  const batch = options.batch ?? 2;
  const calls = options.calls ?? 1;
  const side = options.sampleSize ?? config.unet.sampleSize;
  const built = performance.now();
  const precision = options.precision ?? "f32";
  if (precision === "f16" && !gpu.features.has("shader-f16")) throw new PrecisionError(gpu);
  const unet = withParameterDtype(
    precision,
    () => new UNet2DConditionModel(gpu, config.unet, new ParameterInit(0)),
  );
  await gpu.sync();
  const buildSeconds = (performance.now() - built) / 1000;
  log(`built ${config.name}'s UNet with random weights in ${buildSeconds.toFixed(1)} s`);
  const weightBytes = gpu.pool.snapshot().inUseBytes;
  const unetParameters = unet.parameters().reduce((sum, tensor) => sum + tensor.size, 0);
  const shape = [batch, config.unet.inChannels, side, side];
  const sample = randomNormal(gpu, shape, 1);
  const context = randomNormal(
    gpu,
    [batch, config.textEncoder.maxPositions, config.unet.crossAttentionDim],
    2,
  );
  const timesteps = Tensor.upload(gpu, new Float32Array(batch).fill(500), [batch]);
  await gpu.sync();
  gpu.pool.resetPeak();
  const callSeconds: number[] = [];
  for (let call = 0; call < calls; call++) {
    const start = performance.now();
    const output = noGrad(() => tidy(() => unet.forward(sample, timesteps, context)));
    await gpu.sync();
    callSeconds.push((performance.now() - start) / 1000);
    log(`UNet call ${call + 1}/${calls} on [${shape.join(", ")}]: ${callSeconds[call].toFixed(1)} s`);
    output.release();
  }
  const peakBytes = gpu.pool.snapshot().peakInUseBytes;
  for (const tensor of [sample, context, timesteps]) tensor.release();
  unet.dispose();
  return {
    config: config.name,
    precision,
    batch,
    sample: shape,
    unetParameters,
    buildSeconds,
    callSeconds,
    weightBytes,
    peakBytes,
    adapter: `${gpu.adapter.description || gpu.adapter.device} (${gpu.kind})`,
  };
}

function precisionFlag(text: string): Precision {
  if (text !== "f32" && text !== "f16") throw new Error(`--precision must be f32 or f16, got "${text}"`);
  return text;
}

function loadAverage(): string {
  try {
    return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  } catch {
    return "unknown";
  }
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const value = (flag: string, fallback: string) => {
    const index = args.indexOf(flag);
    return index >= 0 && index + 1 < args.length ? args[index + 1] : fallback;
  };
  const gpu = await defaultGpu();
  if (args.includes("--unet-step")) {
    const config = diffusionConfig(value("--config", "sd2-base"));
    const result = await benchmarkUnetStep(gpu, config, {
      batch: Number(value("--batch", "2")),
      calls: Number(value("--calls", "1")),
      sampleSize: Number(value("--sample-size", String(config.unet.sampleSize))),
      precision: precisionFlag(value("--precision", "f32")),
      log: (line) => process.stderr.write(`${new Date().toISOString()} ${line} (load ${loadAverage()})\n`),
    });
    console.log(JSON.stringify(result));
    process.exit(0);
  }
  const result = await benchmarkModel(gpu, diffusionConfig(value("--config", "phantom-small")), {
    batch: Number(value("--batch", "8")),
    steps: Number(value("--steps", "3")),
    warmup: Number(value("--warmup", "1")),
  });
  console.log(JSON.stringify(result));
  process.exit(0);
}
