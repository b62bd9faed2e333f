/**
 * Times benchmark cases side by side with their naive reference in one run: warm-up (compiles
 * the shaders), then repeated timed batches with a GPU sync around each, median taken.
 */
import type { Gpu } from "../runtime/device.ts";
import type { WaitMode } from "../runtime/wait.ts";
import type { BenchCase } from "./types.ts";

export interface BenchResult {
  op: string;
  shape: string;
  context: string;
  variant: string;
  /** How the timed runs waited for the GPU (runtime/wait.ts). */
  wait: string;
  naiveWait: string;
  milliseconds: number;
  naiveLabel: string;
  naiveMilliseconds: number;
  speedup: number;
  gflopsPerSecond: number;
  naiveGflopsPerSecond: number;
  gigabytesPerSecond: number;
  targetSpeedup: number | null;
  meetsTarget: boolean | null;
  extra: Record<string, string>;
  /** GFLOP/s as a fraction of the roofline measured in the same run (bench/roofline.ts), if measured. */
  rooflineFraction?: number;
}

/** Median wall time of `fn` (recorded, then synced), after a warm-up call; `wait` overrides the wait mode. */
export async function timeMedian(
  gpu: Gpu,
  fn: () => void,
  repeats: number,
  minimumMs: number,
  wait: WaitMode | undefined,
): Promise<number> {
  const mode = gpu.waitPolicy.mode;
  if (wait) gpu.waitPolicy.mode = wait;
  try {
    return await timeSamples(gpu, fn, repeats, minimumMs);
  } finally {
    gpu.waitPolicy.mode = mode;
  }
}

async function timeSamples(gpu: Gpu, fn: () => void, repeats: number, minimumMs: number): Promise<number> {
  fn();
  await gpu.sync(); // warm-up: shader compile and first-touch allocations
  const samples: number[] = [];
  const started = performance.now();
  while (samples.length < repeats || (performance.now() - started < minimumMs && samples.length < 50)) {
    const begin = performance.now();
    fn();
    await gpu.sync();
    samples.push(performance.now() - begin);
    if (samples.length >= repeats && performance.now() - started > minimumMs * 4) break;
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)];
}

/** The variant `run` dispatched, read from the profiler's records of one call. */
function variantOf(gpu: Gpu, op: string): string {
  const rows = gpu.profiler.rows().filter((row) => row.name === op);
  return rows.map((row) => row.variant).join("+") || "-";
}

export async function runBenchCase(gpu: Gpu, benchCase: BenchCase, repeats = 3): Promise<BenchResult> {
  const instance = await benchCase.setup(gpu);
  try {
    gpu.profiler.reset();
    const milliseconds = await timeMedian(gpu, () => instance.run(), repeats, 300, instance.waits?.run);
    const variant = variantOf(gpu, benchCase.op);
    const naiveMilliseconds = await timeMedian(
      gpu,
      () => instance.naive(),
      repeats,
      300,
      instance.waits?.naive,
    );
    const speedup = naiveMilliseconds / milliseconds;
    return {
      op: benchCase.op,
      shape: benchCase.shape,
      context: benchCase.context,
      variant,
      wait: instance.waits?.run ?? gpu.waitPolicy.mode,
      naiveWait: instance.waits?.naive ?? gpu.waitPolicy.mode,
      milliseconds,
      naiveLabel: instance.naiveLabel,
      naiveMilliseconds,
      speedup,
      gflopsPerSecond: benchCase.flops / milliseconds / 1e6,
      naiveGflopsPerSecond: benchCase.flops / naiveMilliseconds / 1e6,
      gigabytesPerSecond: benchCase.bytes / milliseconds / 1e6,
      targetSpeedup: benchCase.targetSpeedup ?? null,
      meetsTarget: benchCase.targetSpeedup === undefined ? null : speedup >= benchCase.targetSpeedup,
      extra: (await instance.extra?.({ milliseconds, naiveMilliseconds })) ?? {},
    };
  } finally {
    instance.dispose();
    await gpu.sync();
  }
}

export function formatBenchTable(results: BenchResult[]): string {
  const header = [
    "op",
    "shape",
    "variant",
    "ms",
    "GFLOP/s",
    "of roof",
    "GB/s",
    "naive ms",
    "speed-up",
    "target",
    "notes",
  ];
  const rows = results.map((result) => [
    result.op,
    result.shape,
    result.variant,
    result.milliseconds.toFixed(2),
    result.gflopsPerSecond.toFixed(2),
    result.rooflineFraction === undefined ? "-" : `${(100 * result.rooflineFraction).toFixed(1)}%`,
    result.gigabytesPerSecond.toFixed(2),
    result.naiveMilliseconds.toFixed(2),
    `${result.speedup.toFixed(2)}x`,
    result.targetSpeedup === null ? "-" : `${result.targetSpeedup}x ${result.meetsTarget ? "met" : "MISSED"}`,
    [result.naiveLabel, ...Object.entries(result.extra).map(([key, value]) => `${key} ${value}`)].join("; "),
  ]);
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column].length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((text, column) =>
        column >= 3 && column <= 8 ? text.padStart(widths[column]) : text.padEnd(widths[column]),
      )
      .join("  ");
  return [line(header), line(widths.map((width) => "-".repeat(width))), ...rows.map(line)].join("\n");
}
