/**
 * `cxr bench diffusion`: training steps/s and sampled images/s of a configuration on the current
 * adapter, with the kernel profiler's per-kernel breakdown and the buffer pool's peak memory of each,
 * and PyTorch's training step for the same model (packages/diffusion/reference/torch_reference.py
 * bench) beside it. Untrained weights: speed does not depend on them.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  AdamW,
  backward,
  clipGradNorm,
  createGpu,
  Ema,
  type Gpu,
  type ProfileRow,
  randomNormal,
} from "@cxr/kernels";
import { type DiffusionModelConfig, diffusionConfig } from "./model/config.ts";
import { createDiffusionModel } from "./model/model.ts";
import { WordTokenizer } from "./model/tokenizer.ts";
import { Pipeline } from "./pipeline/pipeline.ts";
import { makeNoiseSchedule } from "./schedule/betas.ts";
import { GpuNoiseSchedule } from "./schedule/noising.ts";
import { betaScheduleOf } from "./schedule/of-config.ts";
import type { SamplerKind } from "./schedule/samplers.ts";
import { diffusionLoss, stepDraws } from "./training/train.ts";

export interface DiffusionBenchOptions {
  config: string;
  /** Training batch. */
  batch: number;
  /** Timed training steps (after one untimed warm-up step that compiles the shaders). */
  trainSteps: number;
  /** Images sampled per timed generation, and its denoising steps. */
  sampleImages: number;
  sampleSteps: number;
  sampler: SamplerKind;
  /** Run the PyTorch reference beside (needs /usr/bin/python3 with torch). */
  torch: boolean;
  python: string;
}

export const DIFFUSION_BENCH_DEFAULTS: DiffusionBenchOptions = {
  config: "phantom-tiny",
  batch: 8,
  trainSteps: 3,
  sampleImages: 8,
  sampleSteps: 10,
  sampler: "ddim",
  torch: true,
  python: "/usr/bin/python3",
};

export interface PhaseFigures {
  seconds: number;
  /** Steps/s (training) or images/s (sampling). */
  rate: number;
  peakPoolBytes: number;
  kernels: ProfileRow[];
}

export interface DiffusionBenchResult {
  config: string;
  adapter: string;
  parameters: number;
  batch: number;
  training: PhaseFigures & { secondsPerStep: number };
  sampling: PhaseFigures & {
    images: number;
    steps: number;
    sampler: SamplerKind;
    secondsPerUnetCall: number;
  };
  torch:
    | {
        secondsPerStep: number;
        stepsPerSecond: number;
        threads: number;
        version: string;
        /** The same generation (images, steps, guidance batch) in PyTorch. */
        sampling: { seconds: number; imagesPerSecond: number };
      }
    | { unavailable: string };
  loadAverage: string;
}

function loadAverage(): string {
  try {
    return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  } catch {
    return "unknown";
  }
}

/** PyTorch's figure for the same configuration, or why there is none. */
export function torchTrainingBench(
  config: DiffusionModelConfig,
  batch: number,
  steps: number,
  python: string,
  sample: { images: number; steps: number } = { images: 1, steps: 1 },
): DiffusionBenchResult["torch"] {
  const script = join(dirname(fileURLToPath(import.meta.url)), "..", "reference", "torch_reference.py");
  if (!existsSync(script)) return { unavailable: `${script} not found` };
  const dir = mkdtempSync(join(tmpdir(), "cxr-diffusion-bench-"));
  try {
    writeFileSync(join(dir, "config.json"), JSON.stringify(config));
    const run = spawnSync(
      python,
      [
        script,
        "bench",
        "--config",
        join(dir, "config.json"),
        "--batch",
        String(batch),
        "--steps",
        String(steps),
        "--sample-images",
        String(sample.images),
        "--sample-steps",
        String(sample.steps),
      ],
      { encoding: "utf8", timeout: 900_000 },
    );
    if (run.error) return { unavailable: `${python}: ${run.error.message}` };
    if (run.status !== 0) {
      const reason = run.stderr.trim().split("\n").at(-1) ?? `exit ${run.status}`;
      return { unavailable: `${python} ${script} bench failed: ${reason}` };
    }
    const figures = JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "{}") as {
      seconds_per_step: number;
      threads: number;
      torch: string;
      sampling: { seconds: number; images_per_second: number };
    };
    return {
      secondsPerStep: figures.seconds_per_step,
      stepsPerSecond: 1 / figures.seconds_per_step,
      threads: figures.threads,
      version: figures.torch,
      sampling: { seconds: figures.sampling.seconds, imagesPerSecond: figures.sampling.images_per_second },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runDiffusionBench(
  input: Partial<DiffusionBenchOptions> = {},
  gpuOverride?: Gpu,
): Promise<DiffusionBenchResult> {
  const options = { ...DIFFUSION_BENCH_DEFAULTS, ...input };
  const config = diffusionConfig(options.config);
  const gpu = gpuOverride ?? (await createGpu({ profile: true }));
  const prompts = [
    "70 year old WHITE female. Cardiomegaly.",
    "45 year old ASIAN male. No acute cardiopulmonary abnormality.",
  ];
  const tokenizer = WordTokenizer.fromPrompts(prompts, { maxLength: config.textEncoder.maxPositions });
  const model = createDiffusionModel(gpu, config, tokenizer, 1);
  const params = model.parameters();
  const optimizer = new AdamW(params, { learningRate: 1e-4 });
  const ema = new Ema(params, 0.999);
  const beta = betaScheduleOf(config);
  const schedule = makeNoiseSchedule(beta);
  const table = GpuNoiseSchedule.upload(gpu, schedule);
  const { resolution, channels } = config;
  const shape = [options.batch, channels, resolution, resolution];

  const trainStep = (step: number) => {
    const images = randomNormal(gpu, shape, 1, step * 2 * options.batch * channels * resolution * resolution);
    const epsilon = randomNormal(gpu, shape, 2, step * options.batch * channels * resolution * resolution);
    const { timesteps } = stepDraws(1, step, options.batch, beta.numTrainTimesteps);
    const batchPrompts = Array.from({ length: options.batch }, (_, index) =>
      index % 10 === 0 ? "" : prompts[index % 2],
    );
    const { loss, release } = diffusionLoss(model, table, schedule.alphasCumprod, {
      images,
      epsilon,
      timesteps,
      prompts: batchPrompts,
      minSnrGamma: 5,
    });
    backward(loss);
    clipGradNorm(params, 1).release();
    optimizer.step();
    optimizer.zeroGrad();
    ema.update();
    release();
    loss.release();
  };

  model.train();
  trainStep(0); // compiles every shader
  await gpu.sync();
  gpu.profiler.reset();
  gpu.pool.resetPeak();
  const trainStarted = performance.now();
  for (let step = 1; step <= options.trainSteps; step++) {
    trainStep(step);
    await gpu.sync(); // one sync per step, as training reads nothing back inside a step
  }
  const trainSeconds = (performance.now() - trainStarted) / 1000;
  const training = {
    seconds: trainSeconds,
    secondsPerStep: trainSeconds / options.trainSteps,
    rate: options.trainSteps / trainSeconds,
    peakPoolBytes: gpu.pool.snapshot().peakInUseBytes,
    kernels: gpu.profiler.rows(),
  };
  optimizer.release();
  ema.release();

  const pipeline = new Pipeline(model, null, true);
  const sampleOptions = {
    prompt: prompts[0],
    n: options.sampleImages,
    steps: options.sampleSteps,
    sampler: options.sampler,
    maxBatch: options.sampleImages,
  };
  await pipeline.generate({ ...sampleOptions, steps: 1, n: 1 }); // compiles the inference shapes
  gpu.profiler.reset();
  gpu.pool.resetPeak();
  const result = await pipeline.generate(sampleOptions);
  const sampling = {
    seconds: result.seconds,
    rate: result.imagesPerSecond,
    images: options.sampleImages,
    steps: options.sampleSteps,
    sampler: options.sampler,
    secondsPerUnetCall: result.seconds / options.sampleSteps,
    peakPoolBytes: gpu.pool.snapshot().peakInUseBytes,
    kernels: gpu.profiler.rows(),
  };
  const parameters = model.parameterCounts().total;
  pipeline.dispose();
  table.release();
  const torch = options.torch
    ? torchTrainingBench(config, options.batch, options.trainSteps, options.python, {
        images: options.sampleImages,
        steps: options.sampleSteps,
      })
    : { unavailable: "skipped (--no-torch)" };
  return {
    config: config.name,
    adapter: `${gpu.adapter.description || gpu.adapter.device} (${gpu.adapter.kind}, ${gpu.adapter.backend})`,
    parameters,
    batch: options.batch,
    training,
    sampling,
    torch,
    loadAverage: loadAverage(),
  };
}

function megabytes(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

function topKernels(rows: ProfileRow[], count = 12): string {
  const sorted = [...rows].sort((a, b) => (b.milliseconds ?? 0) - (a.milliseconds ?? 0)).slice(0, count);
  const header = "  kernel                              calls      ms   GFLOP/s";
  const lines = sorted.map(
    (row) =>
      `  ${`${row.name}${row.variant ? `/${row.variant}` : ""}`.padEnd(34)} ${String(row.calls).padStart(6)} ${(row.milliseconds ?? 0).toFixed(1).padStart(8)} ${(row.gflopsPerSecond ?? 0).toFixed(2).padStart(9)}`,
  );
  return [header, ...lines].join("\n");
}

export function formatDiffusionBench(result: DiffusionBenchResult): string {
  const torch =
    "unavailable" in result.torch
      ? `PyTorch: unavailable (${result.torch.unavailable})`
      : `PyTorch ${result.torch.version} (${result.torch.threads} threads, CPU): ${result.torch.secondsPerStep.toFixed(3)} s/step, ${result.torch.stepsPerSecond.toFixed(3)} steps/s`;
  return [
    `diffusion bench: ${result.config} (${(result.parameters / 1e6).toFixed(2)} M parameters) on ${result.adapter}; load average ${result.loadAverage}`,
    `training, batch ${result.batch}: ${result.training.secondsPerStep.toFixed(3)} s/step, ${result.training.rate.toFixed(3)} steps/s, ${(result.training.rate * result.batch).toFixed(2)} images/s; peak pool ${megabytes(result.training.peakPoolBytes)}`,
    topKernels(result.training.kernels),
    torch,
    `sampling ${result.sampling.images} images x ${result.sampling.steps} ${result.sampling.sampler} steps with guidance (UNet batch ${2 * result.sampling.images}): ${result.sampling.seconds.toFixed(2)} s, ${result.sampling.rate.toFixed(3)} images/s, ${result.sampling.secondsPerUnetCall.toFixed(3)} s per step; peak pool ${megabytes(result.sampling.peakPoolBytes)}`,
    topKernels(result.sampling.kernels),
    "unavailable" in result.torch
      ? `PyTorch sampling: unavailable (${result.torch.unavailable})`
      : `PyTorch sampling, same images, steps and guidance batch (DDIM): ${result.torch.sampling.seconds.toFixed(2)} s, ${result.torch.sampling.imagesPerSecond.toFixed(3)} images/s`,
  ].join("\n");
}
