/**
 * `cxr bench evaluate`: the evaluation's cost at study scale. Synthesizes a predictions table
 * (default 100,000 images x 14 labels) and a validation table, then times the full evaluation with
 * patient-level bootstrap over all subgroups. Single-threaded: everything runs on the main thread.
 */
import { loadavg } from "node:os";
import { type EvaluationConfig, evaluatePredictions } from "./evaluate.ts";
import { synthesizePredictions } from "./synthetic.ts";

export interface EvaluationBenchOptions {
  readonly images: number;
  readonly patients: number;
  readonly validationImages: number;
  readonly rounds: number;
  readonly seed: number;
}

export const DEFAULT_EVALUATION_BENCH: EvaluationBenchOptions = {
  images: 100_000,
  patients: 40_000,
  validationImages: 20_000,
  rounds: 1000,
  seed: 1,
};

export interface EvaluationBenchResult {
  readonly options: EvaluationBenchOptions;
  readonly labels: number;
  readonly subgroups: number;
  readonly synthesizeSeconds: number;
  /** Thresholds, sorting, point estimates and the document, without bootstrap. */
  readonly evaluateWithoutBootstrapSeconds: number;
  readonly evaluateWithoutBootstrapCpuSeconds: number;
  /** The full evaluation: what `cxr evaluate` costs with these options. */
  readonly evaluateSeconds: number;
  readonly evaluateCpuSeconds: number;
  readonly millisecondsPerRound: number;
  readonly runtime: string;
  /** One-minute load average at the end: above the core count, wall time includes waiting for a core. */
  readonly loadAverage: number;
}

/** The target for the default options, in seconds on one core. */
export const EVALUATION_BENCH_TARGET_SECONDS = 60;

function seconds(since: number): number {
  return (performance.now() - since) / 1000;
}

export function runEvaluationBench(options: EvaluationBenchOptions): EvaluationBenchResult {
  let started = performance.now();
  const predictions = synthesizePredictions({
    images: options.images,
    patients: options.patients,
    seed: options.seed,
  });
  const validation = synthesizePredictions({
    images: options.validationImages,
    patients: Math.max(1, Math.round((options.validationImages * options.patients) / options.images)),
    seed: options.seed + 1,
  });
  const synthesizeSeconds = seconds(started);

  const config: Partial<EvaluationConfig> = { seed: options.seed };
  started = performance.now();
  const cpuBeforeSetup = process.cpuUsage();
  evaluatePredictions({ predictions, validation }, { ...config, bootstrapRounds: 0 });
  const evaluateWithoutBootstrapSeconds = seconds(started);
  const setupCpu = process.cpuUsage(cpuBeforeSetup);

  started = performance.now();
  const cpuStart = process.cpuUsage();
  const document = evaluatePredictions(
    { predictions, validation },
    { ...config, bootstrapRounds: options.rounds },
  );
  const evaluateSeconds = seconds(started);
  const cpu = process.cpuUsage(cpuStart);

  return {
    options,
    labels: document.inputs.labels.length,
    subgroups: document.subgroups.length,
    synthesizeSeconds,
    evaluateWithoutBootstrapSeconds,
    evaluateWithoutBootstrapCpuSeconds: (setupCpu.user + setupCpu.system) / 1e6,
    evaluateSeconds,
    evaluateCpuSeconds: (cpu.user + cpu.system) / 1e6,
    millisecondsPerRound:
      options.rounds > 0 ? ((evaluateSeconds - evaluateWithoutBootstrapSeconds) * 1000) / options.rounds : 0,
    runtime: typeof Bun !== "undefined" ? `bun ${Bun.version}` : `node ${process.versions.node}`,
    loadAverage: loadavg()[0],
  };
}

export function formatEvaluationBench(result: EvaluationBenchResult): string {
  const { options } = result;
  // The evaluation is single-threaded, so CPU time is its time on one core; wall time also counts
  // waiting for a core when the machine is shared.
  const target = EVALUATION_BENCH_TARGET_SECONDS;
  return [
    `evaluate bench (${result.runtime}, one thread; load average ${result.loadAverage.toFixed(1)})`,
    `  predictions: ${options.images} images of ${options.patients} patients x ${result.labels} labels; ` +
      `validation: ${options.validationImages} images; ${result.subgroups} subgroups (overall, sex, age, race, intersections)`,
    `  synthesize:                 ${result.synthesizeSeconds.toFixed(2)} s`,
    `  evaluate without bootstrap: ${result.evaluateWithoutBootstrapSeconds.toFixed(2)} s wall, ` +
      `${result.evaluateWithoutBootstrapCpuSeconds.toFixed(2)} s CPU`,
    `  evaluate with ${options.rounds} rounds: ${result.evaluateSeconds.toFixed(2)} s wall, ` +
      `${result.evaluateCpuSeconds.toFixed(2)} s CPU (${result.millisecondsPerRound.toFixed(1)} ms wall per round)`,
    `  target < ${target} s on one core: ${result.evaluateCpuSeconds < target ? "met" : "NOT met"} (CPU time)` +
      (result.evaluateSeconds < target
        ? "; also met in wall time"
        : "; wall time includes waiting for a shared core"),
  ].join("\n");
}
