/**
 * `cxr bench classifier`: training and inference images per second of DenseNet-121 at 224 px and of
 * the phantom DenseNet-BC at 64 px on the current adapter, the peak GPU memory of a training step,
 * the kernels that took the time (timestamp queries, where the adapter has them), and PyTorch's
 * figure for the same network, input and batch on the same machine's CPU beside it.
 */
import { execFileSync } from "node:child_process";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import {
  AdamW,
  backward,
  bceWithLogitsLoss,
  clipGradNorm,
  formatProfile,
  type Gpu,
  noGrad,
  type ProfileRow,
  sigmoidOp,
  Tensor,
  tidy,
} from "@cxr/kernels";
import { DenseNet, denseNetConfig } from "./densenet.ts";

export interface ClassifierBenchCase {
  config: string;
  imageSize: number;
  batch: number;
  /** Timed steps after one untimed warm-up step (which compiles the shaders). */
  steps: number;
  /** Memory-efficient dense blocks (`DenseNetConfig.memoryEfficient`); default false. */
  memoryEfficient?: boolean;
}

export const DEFAULT_CLASSIFIER_BENCH: ClassifierBenchCase[] = [
  { config: "densenet121", imageSize: 224, batch: 4, steps: 2 },
  { config: "densenet121", imageSize: 224, batch: 4, steps: 2, memoryEfficient: true },
  { config: "densenet-bc-phantom", imageSize: 64, batch: 32, steps: 3 },
  { config: "densenet-bc-phantom", imageSize: 64, batch: 32, steps: 3, memoryEfficient: true },
];

export interface ClassifierBenchResult {
  case: ClassifierBenchCase;
  parameters: number;
  trainImagesPerSecond: number;
  inferenceImagesPerSecond: number;
  peakTrainingMemoryBytes: number;
  /** The training steps' kernels, most time first. */
  kernels: ProfileRow[];
  pytorch: {
    trainImagesPerSecond: number;
    inferenceImagesPerSecond: number;
    threads: number;
    version: string;
  } | null;
  pytorchError: string | null;
}

const TORCH_SCRIPT = fileURLToPath(new URL("../../scripts/bench_densenet_torch.py", import.meta.url));

function seeded(count: number, seed: number, threshold?: number): Float32Array {
  let state = seed >>> 0;
  return Float32Array.from({ length: count }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const u = state / 4294967296;
    return threshold === undefined ? u * 2 - 1 : u > threshold ? 1 : 0;
  });
}

export async function runClassifierBenchCase(
  gpu: Gpu,
  benchCase: ClassifierBenchCase,
  options: { pytorch: boolean } = { pytorch: true },
): Promise<ClassifierBenchResult> {
  const config = denseNetConfig(benchCase.config, { memoryEfficient: benchCase.memoryEfficient ?? false });
  const model = new DenseNet(gpu, config);
  const { batch, imageSize, steps } = benchCase;
  const images = Tensor.upload(gpu, seeded(batch * imageSize * imageSize, 1), [
    batch,
    1,
    imageSize,
    imageSize,
  ]);
  const targets = Tensor.upload(gpu, seeded(batch * config.labels, 2, 0.8), [batch, config.labels]);
  const optimizer = new AdamW(model.parameters(), { learningRate: 1e-3, weightDecay: 1e-4 });
  const trainStep = () => {
    const loss = bceWithLogitsLoss(model.forward(images), targets);
    backward(loss);
    clipGradNorm(model.parameters(), 1).release();
    optimizer.step();
    optimizer.zeroGrad();
    loss.release();
  };
  try {
    model.train();
    trainStep();
    await gpu.sync();
    gpu.pool.resetPeak();
    gpu.profiler.reset();
    let started = performance.now();
    for (let step = 0; step < steps; step++) trainStep();
    await gpu.sync();
    const trainSeconds = (performance.now() - started) / 1000;
    const peakTrainingMemoryBytes = gpu.pool.snapshot().peakInUseBytes;
    const kernels = gpu.profiler.rows();
    model.eval();
    const infer = () => noGrad(() => tidy(() => sigmoidOp(model.forward(images))));
    infer().release();
    await gpu.sync();
    started = performance.now();
    for (let step = 0; step < steps; step++) infer().release();
    await gpu.sync();
    const inferenceSeconds = (performance.now() - started) / 1000;
    let pytorch: ClassifierBenchResult["pytorch"] = null;
    let pytorchError: string | null = null;
    if (options.pytorch) {
      try {
        const output = execFileSync(
          "/usr/bin/python3",
          [TORCH_SCRIPT, JSON.stringify(config), String(imageSize), String(batch), String(steps)],
          { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
        );
        const parsed = JSON.parse(output.trim().split("\n").at(-1) ?? "{}");
        pytorch = {
          trainImagesPerSecond: parsed.train_images_per_second,
          inferenceImagesPerSecond: parsed.inference_images_per_second,
          threads: parsed.threads,
          version: parsed.torch,
        };
      } catch (error) {
        pytorchError = `PyTorch reference unavailable (${error instanceof Error ? error.message.split("\n")[0] : error})`;
      }
    }
    return {
      case: benchCase,
      parameters: model.parameterCount(),
      trainImagesPerSecond: (batch * steps) / trainSeconds,
      inferenceImagesPerSecond: (batch * steps) / inferenceSeconds,
      peakTrainingMemoryBytes,
      kernels,
      pytorch,
      pytorchError,
    };
  } finally {
    optimizer.release();
    images.release();
    targets.release();
    model.dispose();
  }
}

export function formatClassifierBench(gpu: Gpu, results: ClassifierBenchResult[], kernelRows = 12): string {
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  const lines = [
    `classifier bench on ${gpu.adapter.description || gpu.adapter.device} (${gpu.adapter.kind}, ${gpu.adapter.backend}); ${cpus().length} cores (${cpu}); load average ${loadavg()
      .map((value) => value.toFixed(1))
      .join(" ")}`,
    "",
    "| network | input | batch | dense blocks | parameters | train images/s | inference images/s | peak training memory | PyTorch train images/s | PyTorch inference images/s |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const result of results) {
    const { case: c, pytorch } = result;
    lines.push(
      `| ${c.config} | ${c.imageSize} px | ${c.batch} | ${blocksName(c)} | ${result.parameters.toLocaleString("en-US")} | ${result.trainImagesPerSecond.toFixed(2)} | ${result.inferenceImagesPerSecond.toFixed(2)} | ${(result.peakTrainingMemoryBytes / 2 ** 20).toFixed(0)} MiB | ${pytorch ? pytorch.trainImagesPerSecond.toFixed(2) : "-"} | ${pytorch ? pytorch.inferenceImagesPerSecond.toFixed(2) : "-"} |`,
    );
  }
  for (const result of results) {
    lines.push(
      "",
      `${result.case.config} (${blocksName(result.case)} blocks) at ${result.case.imageSize} px, training steps (${result.case.steps} x batch ${result.case.batch}), top kernels:`,
    );
    lines.push(formatProfile(result.kernels.slice(0, kernelRows)));
    if (result.pytorch)
      lines.push(
        `PyTorch ${result.pytorch.version}, ${result.pytorch.threads} threads, same network, input and batch`,
      );
    if (result.pytorchError) lines.push(result.pytorchError);
  }
  return lines.join("\n");
}

function blocksName(benchCase: ClassifierBenchCase): string {
  return benchCase.memoryEfficient ? "memory-efficient" : "plain";
}
