import { writeFileSync } from "node:fs";
import type { Command } from "commander";
import { BENCH_CASES } from "./bench/cases.ts";
import { type BenchResult, formatBenchTable, runBenchCase } from "./bench/runner.ts";
import { dumpKernelSources } from "./ops/sources.ts";
import { createGpu, type DeviceOptions, GpuUnavailableError, OPTIONAL_FEATURES } from "./runtime/device.ts";
import { parseWaitMode, WAIT_MODES } from "./runtime/wait.ts";

interface DeviceFlags {
  backend?: string;
  adapter?: string;
  verbose?: boolean;
}

function deviceOptions(flags: DeviceFlags, profile: boolean): DeviceOptions {
  return { backend: flags.backend, adapterName: flags.adapter, profile, verbose: flags.verbose || undefined };
}

const VERBOSE_HELP = "also show Dawn's harmless adapter warnings (same as CXR_VERBOSE=1)";

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

async function benchKernels(
  flags: DeviceFlags & { json?: boolean; filter?: string; repeats: string; out?: string; wait: string },
): Promise<void> {
  const wait = parseWaitMode(flags.wait, "bench kernels --wait");
  const gpu = await createGpu({ ...deviceOptions(flags, true), wait });
  const filter = flags.filter?.split(",").map((text) => text.trim().toLowerCase());
  const cases = BENCH_CASES.filter((benchCase) => {
    const text = `${benchCase.op} ${benchCase.shape}`.toLowerCase();
    return !filter || filter.some((f) => text.includes(f));
  });
  if (cases.length === 0) throw new Error(`bench kernels: no case matches --filter ${flags.filter}`);
  const repeats = Number.parseInt(flags.repeats, 10);
  if (!Number.isInteger(repeats) || repeats < 1)
    throw new Error(`bench kernels: --repeats must be a positive integer`);
  console.error(
    `adapter: ${gpu.adapter.description || gpu.adapter.device} (${gpu.adapter.kind}); timing: ${
      gpu.profiler.timing ? "timestamp queries + wall clock" : "wall clock"
    }; median of >= ${repeats} runs after a warm-up; ${wait} wait`,
  );
  const results: BenchResult[] = [];
  for (const benchCase of cases) {
    console.error(`  ${benchCase.op} ${benchCase.shape} ...`);
    results.push(await runBenchCase(gpu, benchCase, repeats));
  }
  const document = { adapter: gpu.adapter, results };
  if (flags.out) writeFileSync(flags.out, `${JSON.stringify(document, null, 2)}\n`);
  console.log(flags.json ? JSON.stringify(document, null, 2) : formatBenchTable(results));
  gpu.destroy();
}

/** `groups.bench` is the shared `cxr bench` group, built by the CLI and passed down. */
export function registerCommands(program: Command, groups: { bench: Command }): void {
  program
    .command("doctor")
    .description("show the WebGPU adapter, backend, features and limits, or why there is none")
    .option("--backend <name>", "Dawn backend: vulkan, metal, d3d12, opengles")
    .option("--adapter <substring>", "pick the adapter whose name contains this")
    .option("--json", "print JSON")
    .option("--verbose", VERBOSE_HELP)
    .action(doctor);
  program
    .command("kernels")
    .description("inspect the kernels")
    .command("dump <op>")
    .description("print the exact WGSL each variant of an op compiles (ops in the per-op layout: softmax)")
    .option("--variant <name>", "only this variant")
    .option("--pass <name>", "only this pass: forward or backward")
    .action((op: string, flags: { variant?: string; pass?: string }) => {
      process.stdout.write(dumpKernelSources({ op, ...flags }));
    });
  groups.bench
    .command("kernels")
    .description("time each kernel next to a naive reference kernel at UNet and DenseNet shapes")
    .option(
      "--filter <ops>",
      "comma-separated words matched against each case's op and shape, e.g. matmul,conv2d or wait",
    )
    .option("--repeats <n>", "timed runs per kernel (median reported)", "3")
    .option(
      "--wait <mode>",
      `how to wait for the GPU: ${WAIT_MODES.join(" or ")} (busy = Dawn's setImmediate loop)`,
      "timer",
    )
    .option("--backend <name>", "Dawn backend")
    .option("--adapter <substring>", "adapter name substring")
    .option("--json", "print JSON instead of a table")
    .option("--out <file>", "also write the JSON document to this file")
    .option("--verbose", VERBOSE_HELP)
    .action(benchKernels);
}
