/**
 * Times the model's training computation on our kernels: text encoder + UNet forward, MSE to the
 * noise, backward (gradients of every parameter), each waited for with `gpu.sync()`. Random weights,
 * prompts from the phantom's vocabulary, random images and timesteps. The optimizer step is not
 * included (see the kernels README for AdamW's cost).
 *
 *   bun packages/diffusion/src/model/bench.ts [--config phantom-small] [--batch 8] [--steps 3] [--warmup 1]
 */
import { backward, defaultGpu, type Gpu, mseLoss, randomNormal, Tensor } from "@cxr/kernels";
import type { DiffusionModelConfig } from "./config.ts";
import { diffusionConfig } from "./config.ts";
import { createDiffusionModel } from "./model.ts";
import { WordTokenizer } from "./tokenizer.ts";

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

if (import.meta.main) {
  const args = process.argv.slice(2);
  const value = (flag: string, fallback: string) => {
    const index = args.indexOf(flag);
    return index >= 0 && index + 1 < args.length ? args[index + 1] : fallback;
  };
  const gpu = await defaultGpu();
  const result = await benchmarkModel(gpu, diffusionConfig(value("--config", "phantom-small")), {
    batch: Number(value("--batch", "8")),
    steps: Number(value("--steps", "3")),
    warmup: Number(value("--warmup", "1")),
  });
  console.log(JSON.stringify(result));
  process.exit(0);
}
