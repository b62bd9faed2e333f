import { writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import type { Command } from "commander";
import { BENCH_CASES } from "./bench/cases.ts";
import {
  DEFAULT_PYTHON,
  formatModelBench,
  type ModelBenchCases,
  type ModelBenchResult,
  runModelBenchCase,
} from "./bench/models.ts";
import { formatRoofline, measureRoofline } from "./bench/roofline.ts";
import { type BenchResult, formatBenchTable, runBenchCase } from "./bench/runner.ts";
import { dumpKernelSources } from "./ops/sources.ts";
import { createGpu, type DeviceOptions, GpuUnavailableError, OPTIONAL_FEATURES } from "./runtime/device.ts";
import { parseWaitMode, WAIT_MODES } from "./runtime/wait.ts";

interface DeviceFlags {
  backend?: string;
  adapter?: string;
}

// Dawn's two limit warnings are shown by `cxr --verbose <command>` (the CLI sets CXR_VERBOSE=1,
// which createGpu reads), so no command here needs an option of its own for them.
function deviceOptions(flags: DeviceFlags, profile: boolean): DeviceOptions {
  return { backend: flags.backend, adapterName: flags.adapter, profile };
}

const LIMITS_SHOWN = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "minUniformBufferOffsetAlignment",
] as const;

async function doctor(flags: DeviceFlags & { json?: boolean }): Promise<void> {
  let gpu: Awaited<ReturnType<typeof createGpu>>;
  try {
    gpu = await createGpu(deviceOptions(flags, false));
  } catch (error) {
    if (error instanceof GpuUnavailableError) {
      console.log(error.message);
      process.exitCode = 2;
      return;
    }
    throw error;
  }
  const limits = Object.fromEntries(LIMITS_SHOWN.map((name) => [name, gpu.limits[name]]));
  const report = {
    runtime: typeof Bun !== "undefined" ? `bun ${Bun.version}` : `node ${process.versions.node}`,
    adapter: gpu.adapter,
    features: Object.fromEntries(OPTIONAL_FEATURES.map((feature) => [feature, gpu.features.has(feature)])),
    limits,
  };
  if (flags.json) {
    console.log(JSON.stringify(report, null, 2));
  } else {
    const a = gpu.adapter;
    console.log(`runtime   ${report.runtime}`);
    console.log(
      `adapter   ${a.description || a.device} (vendor ${a.vendor || "?"}, ${a.architecture || "?"})`,
    );
    console.log(
      `kind      ${a.kind}${a.kind === "cpu" ? " (software rasterizer: kernels use the CPU variants)" : ""}`,
    );
    console.log(`backend   ${a.backend}${a.compatibilityMode ? " (compatibility mode)" : ""}`);
    for (const [feature, present] of Object.entries(report.features)) {
      console.log(`feature   ${feature.padEnd(16)} ${present ? "yes" : "no"}`);
    }
    for (const [name, value] of Object.entries(limits)) console.log(`limit     ${name.padEnd(34)} ${value}`);
  }
  gpu.destroy();
}

interface BenchFlags extends DeviceFlags {
  json?: boolean;
  filter?: string;
  repeats: string;
  out?: string;
  wait: string;
  models?: boolean;
  quick?: boolean;
  steps: string;
  python: string;
  pytorch: boolean;
}

function positiveInteger(text: string, flag: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1)
    throw new Error(`bench kernels: ${flag} must be a positive integer, got "${text}"`);
  return value;
}

async function benchKernels(flags: BenchFlags, modelCases: ModelBenchCases[]): Promise<void> {
  const wait = parseWaitMode(flags.wait, "bench kernels --wait");
  const repeats = positiveInteger(flags.repeats, "--repeats");
  const steps = positiveInteger(flags.steps, "--steps");
  const filter = flags.filter?.split(",").map((text) => text.trim().toLowerCase());
  const matches = (text: string) => !filter || filter.some((f) => text.toLowerCase().includes(f));
  const models = flags.models
    ? modelCases
        .flatMap((cases) => cases(flags.quick ? "quick" : "full"))
        .filter((c) => matches(`${c.source} ${c.name} ${c.shape}`))
    : [];
  if (flags.models && modelCases.length === 0)
    throw new Error("bench kernels --models: no model cases were registered (the cxr CLI passes them down)");
  if (flags.models && models.length === 0)
    throw new Error(`bench kernels --models: no model case matches --filter ${flags.filter}`);
  const cases = flags.models ? [] : BENCH_CASES.filter((c) => matches(`${c.op} ${c.shape}`));
  if (!flags.models && cases.length === 0)
    throw new Error(`bench kernels: no case matches --filter ${flags.filter}`);
  const gpu = await createGpu({ ...deviceOptions(flags, true), wait });
  console.error(
    `adapter: ${gpu.adapter.description || gpu.adapter.device} (${gpu.adapter.kind}); timing: ${
      gpu.profiler.timing ? "timestamp queries + wall clock" : "wall clock"
    }; median of >= ${flags.models ? steps : repeats} runs after a warm-up; ${wait} wait; load average ${loadavg()
      .map((value) => value.toFixed(2))
      .join(" ")}`,
  );
  console.error("  roofline (register-only fma chains) ...");
  const roofline = await measureRoofline(gpu, flags.quick ? { accumulators: [2, 4], targetMs: 30 } : {});
  const results: BenchResult[] = [];
  for (const benchCase of cases) {
    console.error(`  ${benchCase.op} ${benchCase.shape} ...`);
    const result = await runBenchCase(gpu, benchCase, repeats);
    results.push({ ...result, rooflineFraction: result.gflopsPerSecond / roofline.gflopsPerSecond });
  }
  const modelResults: ModelBenchResult[] = [];
  for (const modelCase of models) {
    console.error(`  ${modelCase.name} (${modelCase.shape}) ...`);
    const result = await runModelBenchCase(gpu, modelCase, {
      steps,
      python: flags.pytorch ? flags.python : null,
    });
    modelResults.push({ ...result, rooflineFraction: result.gflopsPerSecond / roofline.gflopsPerSecond });
  }
  gpu.destroy();
  const document = flags.models
    ? { adapter: gpu.adapter, loadAverage: loadavg(), roofline, models: modelResults }
    : { adapter: gpu.adapter, loadAverage: loadavg(), roofline, results };
  if (flags.out) writeFileSync(flags.out, `${JSON.stringify(document, null, 2)}\n`);
  if (flags.json) console.log(JSON.stringify(document, null, 2));
  else {
    console.log(formatRoofline(roofline));
    console.log("");
    console.log(flags.models ? formatModelBench(modelResults) : formatBenchTable(results));
  }
}

/**
 * `groups.bench` is the shared `cxr bench` group, built by the CLI and passed down; so are
 * `groups.modelBenchCases`, the model-level cases of the packages above (`--models`).
 */
export function registerCommands(
  program: Command,
  groups: { bench: Command; modelBenchCases?: ModelBenchCases[] },
): void {
  program
    .command("doctor")
    .description("show the WebGPU adapter, backend, features and limits, or why there is none")
    .option("--backend <name>", "Dawn backend: vulkan, metal, d3d12, opengles")
    .option("--adapter <substring>", "pick the adapter whose name contains this")
    .option("--json", "print JSON")
    .action(doctor);
  program
    .command("kernels")
    .description("inspect the kernels")
    .command("dump <op>")
    .description("print the exact WGSL each variant of an op compiles (ops in the per-op layout: softmax)")
    .option(
      "--variant <name>",
      "only this variant (f16: the half-precision kernels, printed only when asked for)",
    )
    .option("--pass <name>", "only this pass: forward or backward")
    .action((op: string, flags: { variant?: string; pass?: string }) => {
      process.stdout.write(dumpKernelSources({ op, ...flags }));
    });
  groups.bench
    .command("kernels")
    .description(
      "measure the adapter's f32 FMA roofline, then time each kernel next to a naive reference kernel at UNet and DenseNet shapes (or, with --models, whole model steps beside PyTorch)",
    )
    .option(
      "--filter <ops>",
      "comma-separated words matched against each case's op and shape, e.g. matmul,conv2d or wait",
    )
    .option("--repeats <n>", "timed runs per kernel (median reported)", "3")
    .option(
      "--models",
      "model-level figures instead: a SmallCnn training step, a UNet block and a DenseNet dense block, each with its per-kernel breakdown and PyTorch's time for the same step",
    )
    .option(
      "--quick",
      "a short roofline and, with --models, small model shapes (a smoke test, not a measurement)",
    )
    .option("--steps <n>", "--models: timed steps per model case (median reported)", "3")
    .option("--python <path>", "--models: the Python interpreter with torch", DEFAULT_PYTHON)
    .option("--no-pytorch", "--models: skip PyTorch's column")
    .option(
      "--wait <mode>",
      `how to wait for the GPU: ${WAIT_MODES.join(" or ")} (busy = Dawn's setImmediate loop)`,
      "timer",
    )
    .option("--backend <name>", "Dawn backend")
    .option("--adapter <substring>", "adapter name substring")
    .option("--json", "print JSON instead of a table")
    .option("--out <file>", "also write the JSON document to this file")
    .action((flags: BenchFlags) => benchKernels(flags, groups.modelBenchCases ?? []));
}
