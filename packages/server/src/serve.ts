/**
 * `startModelServer(options)`: the server on the real generator, as `cxr serve` runs it and as the
 * main job calls it. Opens the WebGPU device, loads the default model (so /readyz is true once it
 * answers), and serves on loopback unless told otherwise.
 */
import { existsSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { MODEL_FILES } from "@cxr/diffusion";
import type { Gpu } from "@cxr/kernels";
import { DiffusionGenerator } from "./diffusion-generator.ts";
import { type RunningServer, type StartServerOptions, startServer } from "./server.ts";

export interface ModelServerOptions extends Omit<StartServerOptions, "generator" | "readiness"> {
  /** Device for generation and training (default: one with the profiler on). */
  gpu?: () => Promise<Gpu>;
}

/** The diffusion models (folders with config.json) directly under a models root, sorted. */
export function listDiffusionModels(modelsRoot: string): string[] {
  try {
    return readdirSync(modelsRoot)
      .filter((name) => !name.startsWith(".") && existsSync(join(modelsRoot, name, MODEL_FILES.config)))
      .sort();
  } catch {
    return [];
  }
}

export async function startModelServer(
  options: ModelServerOptions,
): Promise<RunningServer & { generator: DiffusionGenerator }> {
  const dataRoot = resolve(options.dataRoot);
  const modelsRoot = resolve(options.modelsRoot ?? join(dataRoot, "models"));
  const log = options.log ?? ((line: string) => process.stderr.write(`[cxr serve] ${line}\n`));
  const generator = new DiffusionGenerator({ modelsRoot, gpu: options.gpu });
  const defaultPrecision = options.defaultPrecision ?? "f32";
  // A default the adapter cannot run would refuse every request that names no precision: refuse to start.
  const problem = await generator.precisionProblem(defaultPrecision);
  if (problem) throw new Error(`--precision ${defaultPrecision}: ${problem}`);
  const defaultModel = options.defaultModel ?? listDiffusionModels(modelsRoot)[0] ?? null;
  if (defaultModel) {
    try {
      await generator.load(defaultModel, defaultPrecision);
      log(`model "${defaultModel}" loaded (${defaultPrecision})`);
    } catch (error) {
      log(`model "${defaultModel}" did not load: ${(error as Error).message}`);
    }
  } else {
    log(`no model under ${modelsRoot}: /readyz stays false until one is there and named in a request`);
  }
  const server = await startServer({
    ...options,
    dataRoot,
    modelsRoot,
    defaultModel,
    defaultPrecision,
    log,
    gpu: () => generator.device(),
    generator,
    readiness: () => ({
      adapter: generator.gpu
        ? `${generator.gpu.adapter.description || generator.gpu.adapter.device} (${generator.gpu.adapter.backend})`
        : null,
      model: generator.loadedModel,
    }),
  });
  return Object.assign(server, { generator });
}
