/**
 * Model-level figures for `cxr bench kernels --models`: a whole training step (or a block's forward
 * and backward) timed on our kernels, with the profiler's per-kernel breakdown, beside PyTorch's
 * time for the same step on the same machine's CPU.
 *
 * The kernels package knows no model: the cases are built by the packages above it (classifier,
 * diffusion: each exports `modelBenchCases()`) and passed down by the CLI. Each case names its
 * PyTorch twin, a Python script that builds the same shapes with the same config.
 */
import { execFile } from "node:child_process";
import { availableParallelism, loadavg } from "node:os";
import type { Gpu } from "../runtime/device.ts";
import { formatProfile, type ProfileRow } from "../runtime/profiler.ts";

/** "full": the shapes the models use; "quick": small shapes for smoke tests. */
export type ModelBenchSize = "full" | "quick";

export interface ModelBenchStep {
  /** Records one step's dispatches; must not read back to the CPU. */
  step(): void;
  dispose(): void;
}

export interface ModelBenchCase {
  /** e.g. "SmallCnn training step". */
  name: string;
  /** The package that built it, e.g. "classifier". */
  source: string;
  /** Shapes and config, e.g. "batch 32 x 1x64x64, widths 16,32,64,64". */
  shape: string;
  /** What one step computes, e.g. "forward + backward + AdamW". */
  work: string;
  setup(gpu: Gpu): ModelBenchStep | Promise<ModelBenchStep>;
  /**
   * The PyTorch twin: `python script ...args --steps S --warmup W --threads T` prints, as its last
   * stdout line, JSON with `seconds_per_step` (median), `threads` and `torch` (the version).
   */
  pytorch: { script: string; args: string[] };
}

/** What a package above the kernels contributes: its model cases at a size. */
export type ModelBenchCases = (size: ModelBenchSize) => ModelBenchCase[];

export interface PytorchFigure {
  milliseconds: number;
  threads: number;
  version: string;
}

export interface ModelBenchResult {
  name: string;
  source: string;
  shape: string;
  work: string;
  steps: number;
  /** Median wall-clock time of one step on our kernels (record, submit, wait). */
  milliseconds: number;
  /** FLOPs of one step, summed over its kernels (profiler). */
  flops: number;
  gflopsPerSecond: number;
  /** gflopsPerSecond over the roofline measured in the same run, when it was measured. */
  rooflineFraction?: number;
  /** One step's kernels, most time first (calls, FLOPs, bytes and GPU time per step). */
  kernels: ProfileRow[];
  pytorch: PytorchFigure | null;
  /** Why PyTorch's column is empty (no python, no torch, the script failed); null when it ran. */
  pytorchUnavailable: string | null;
}

export interface ModelBenchOptions {
  steps?: number;
  warmup?: number;
  /** The interpreter with torch (default /usr/bin/python3); null skips PyTorch. */
  python?: string | null;
  /** torch.set_num_threads (default: the core count). */
  threads?: number;
}

export const DEFAULT_PYTHON = "/usr/bin/python3";

function perStep(rows: ProfileRow[], steps: number): ProfileRow[] {
  return rows.map((row) => {
    const gpuNanoseconds = row.gpuNanoseconds === null ? null : row.gpuNanoseconds / steps;
    return {
      ...row,
      calls: row.calls / steps,
      flops: row.flops / steps,
      bytes: row.bytes / steps,
      gpuNanoseconds,
      milliseconds: gpuNanoseconds === null ? null : gpuNanoseconds / 1e6,
    };
  });
}

/** Runs a twin script; resolves to its figure or to the reason there is none (never throws). */
export function runPytorchTwin(
  python: string,
  script: string,
  args: string[],
  run: { steps: number; warmup: number; threads: number },
): Promise<PytorchFigure | string> {
  const argv = [
    script,
    ...args,
    "--steps",
    String(run.steps),
    "--warmup",
    String(run.warmup),
    "--threads",
    String(run.threads),
  ];
  return new Promise((resolve) => {
    execFile(
      python,
      argv,
      { encoding: "utf8", timeout: 20 * 60_000, maxBuffer: 1 << 24 },
      (error, stdout, stderr) => {
        if (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if (code === "ENOENT") return resolve(`${python} not found`);
          const missing = /No module named '([^']+)'/.exec(stderr);
          if (missing) return resolve(`${missing[1]} is not installed for ${python}`);
          const last = stderr.trim().split("\n").at(-1) || error.message.split("\n")[0];
          return resolve(`${script} failed: ${last}`);
        }
        try {
          const parsed = JSON.parse(stdout.trim().split("\n").at(-1) ?? "");
          if (typeof parsed.seconds_per_step !== "number" || !(parsed.seconds_per_step > 0)) {
            return resolve(`${script} printed no seconds_per_step`);
          }
          resolve({
            milliseconds: parsed.seconds_per_step * 1000,
            threads: Number(parsed.threads),
            version: String(parsed.torch),
          });
        } catch {
          resolve(`${script} printed no JSON line: ${stdout.trim().split("\n").at(-1) ?? ""}`);
        }
      },
    );
  });
}

export async function runModelBenchCase(
  gpu: Gpu,
  benchCase: ModelBenchCase,
  options: ModelBenchOptions = {},
): Promise<ModelBenchResult> {
  const steps = options.steps ?? 3;
  const warmup = options.warmup ?? 1;
  if (!Number.isInteger(steps) || steps < 1)
    throw new RangeError(`model bench: steps must be >= 1, got ${steps}`);
  if (!Number.isInteger(warmup) || warmup < 1)
    throw new RangeError(`model bench: warmup must be >= 1, got ${warmup}`);
  if (!gpu.profiler.enabled) {
    throw new Error("model bench: the per-kernel breakdown needs a device created with { profile: true }");
  }
  const instance = await benchCase.setup(gpu);
  const samples: number[] = [];
  let kernels: ProfileRow[];
  try {
    for (let index = 0; index < warmup; index++) {
      instance.step();
      await gpu.sync(); // compiles the shaders, first-touch allocations
    }
    gpu.profiler.reset();
    for (let index = 0; index < steps; index++) {
      const begin = performance.now();
      instance.step();
      await gpu.sync();
      samples.push(performance.now() - begin);
    }
    kernels = perStep(gpu.profiler.rows(), steps);
  } finally {
    instance.dispose();
    await gpu.sync();
  }
  samples.sort((a, b) => a - b);
  const milliseconds = samples[Math.floor(samples.length / 2)];
  const flops = kernels.reduce((total, row) => total + row.flops, 0);
  let pytorch: PytorchFigure | null = null;
  let pytorchUnavailable: string | null = null;
  const python = options.python === undefined ? DEFAULT_PYTHON : options.python;
  if (python === null) {
    pytorchUnavailable = "not run (--no-pytorch)";
  } else {
    const figure = await runPytorchTwin(python, benchCase.pytorch.script, benchCase.pytorch.args, {
      steps,
      warmup,
      threads: options.threads ?? availableParallelism(),
    });
    if (typeof figure === "string") pytorchUnavailable = figure;
    else pytorch = figure;
  }
  return {
    name: benchCase.name,
    source: benchCase.source,
    shape: benchCase.shape,
    work: benchCase.work,
    steps,
    milliseconds,
    flops,
    gflopsPerSecond: flops / milliseconds / 1e6,
    kernels,
    pytorch,
    pytorchUnavailable,
  };
}

export function formatModelBench(results: ModelBenchResult[], kernelRows = 12): string {
  const load = loadavg()
    .map((value) => value.toFixed(2))
    .join(" ");
  const lines = [
    `model-level figures: median ms per step (wall clock: record, submit, wait); ${availableParallelism()} cores; load average ${load}`,
    "",
    "| step | source | shape | work | ours ms/step | GFLOP/s | of roof | PyTorch ms/step | PyTorch / ours |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const result of results) {
    const roof =
      result.rooflineFraction === undefined ? "-" : `${(100 * result.rooflineFraction).toFixed(1)}%`;
    const torch = result.pytorch ? result.pytorch.milliseconds.toFixed(1) : "unavailable";
    const ratio = result.pytorch ? `${(result.pytorch.milliseconds / result.milliseconds).toFixed(2)}x` : "-";
    lines.push(
      `| ${result.name} | ${result.source} | ${result.shape} | ${result.work} | ${result.milliseconds.toFixed(1)} | ${result.gflopsPerSecond.toFixed(2)} | ${roof} | ${torch} | ${ratio} |`,
    );
  }
  for (const result of results) {
    lines.push(
      "",
      `${result.name} (${result.shape}): per-kernel breakdown of one step (${result.steps} timed steps)`,
    );
    const shown = result.kernels.slice(0, kernelRows);
    lines.push(formatProfile(shown));
    const rest = result.kernels.length - shown.length;
    if (rest > 0) lines.push(`... and ${rest} more kernels`);
    lines.push(
      result.pytorch
        ? `PyTorch ${result.pytorch.version} (CPU, ${result.pytorch.threads} threads), same step: ${result.pytorch.milliseconds.toFixed(1)} ms; ours ${result.milliseconds.toFixed(1)} ms`
        : `PyTorch column unavailable: ${result.pytorchUnavailable}`,
    );
  }
  return lines.join("\n");
}
