/**
 * The real generator: models are folders under the models root written by @cxr/diffusion
 * (`DiffusionModel.save`, `cxr train diffusion`), loaded with createPipeline and kept per (model,
 * precision): the last `cacheSize` used (an f16 pipeline holds half the weight memory of an f32 one). Image i of a job is `generate({ n: 1, seed: seed + i })`, so every image has
 * its own seed and can be made again alone, which is what lets a re-run job skip finished images.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import {
  createPipeline,
  type DiffusionModelConfig,
  MODEL_FILES,
  negativePromptFor,
  type Pipeline,
  PrecisionError,
  readModelConfig,
} from "@cxr/diffusion";
import { createGpu, type Gpu } from "@cxr/kernels";
import type { Precision } from "./config.ts";
import type { GeneratedImage, ImageGenerator, ImageRequest, ModelInfo } from "./generation.ts";
import { PathRefused, resolveUnderRoot } from "./paths.ts";

export interface DiffusionGeneratorOptions {
  modelsRoot: string;
  /** The device (default: one opened with the profiler on, from CXR_BACKEND / CXR_ADAPTER). */
  gpu?: () => Promise<Gpu>;
  /** Pipelines kept loaded. Default 2. */
  cacheSize?: number;
}

let ownGpu: Promise<Gpu> | null = null;
/** A device with the profiler on (kernel counts always; GPU time where timestamp-query exists). */
export function serverGpu(): Promise<Gpu> {
  ownGpu ??= createGpu({
    backend: process.env.CXR_BACKEND || undefined,
    adapterName: process.env.CXR_ADAPTER || undefined,
    profile: true,
  });
  return ownGpu;
}

export class DiffusionGenerator implements ImageGenerator {
  private readonly pipelines = new Map<string, Promise<Pipeline>>();
  private lastModel: string | null = null;
  private gpuOpened: Gpu | null = null;

  constructor(private readonly options: DiffusionGeneratorOptions) {}

  private modelDir(name: string): string | null {
    try {
      const dir = resolveUnderRoot("model", this.options.modelsRoot, name);
      return dir && existsSync(join(dir, MODEL_FILES.config)) ? dir : null;
    } catch (error) {
      if (error instanceof PathRefused) return null;
      throw error;
    }
  }

  hasModel(name: string): boolean {
    return this.modelDir(name) !== null;
  }

  /**
   * What config.json says of a model: size and sampling, or the problem that stops it loading (what
   * the library's `readModelConfig` refuses: not JSON, another format, or a `configProblems` finding
   * such as an unknown sampling.sampler), with the server's folder shown as the model's name. Read on
   * every call: a 2 KB file, so an edited config.json counts at once.
   */
  modelInfo(name: string): ModelInfo | null {
    const dir = this.modelDir(name);
    if (!dir) return null;
    let config: DiffusionModelConfig;
    try {
      config = readModelConfig(dir);
    } catch (error) {
      return { name, kind: "diffusion", problem: (error as Error).message.replaceAll(dir, name) };
    }
    return {
      name,
      kind: "diffusion",
      size: config.resolution,
      ...(config.sampling
        ? { defaultSampler: config.sampling.sampler, defaultSteps: config.sampling.steps }
        : {}),
      details: { config: config.name },
    };
  }

  /** The device, once a model was loaded (for /readyz). */
  get gpu(): Gpu | null {
    return this.gpuOpened;
  }

  /** The model loaded last (for /readyz). */
  get loadedModel(): string | null {
    return this.lastModel;
  }

  async device(): Promise<Gpu> {
    this.gpuOpened ??= await (this.options.gpu ?? serverGpu)();
    return this.gpuOpened;
  }

  /** The loaded pipelines as `model/precision`, least recently used first. */
  get cached(): string[] {
    return [...this.pipelines.keys()];
  }

  /** f16 needs the adapter feature shader-f16 (the message names the adapter); f32 always runs. */
  async precisionProblem(precision: Precision): Promise<string | null> {
    if (precision === "f32") return null;
    const gpu = await this.device();
    if (gpu.features.has("shader-f16")) return null;
    const name = gpu.adapter?.description || gpu.adapter?.device || "this adapter";
    return `"f16" needs the adapter feature 'shader-f16', which ${name} lacks; use "f32"`;
  }

  /** Loads (or returns the loaded) pipeline of a model at a precision (default f32). */
  async load(name: string, precision: Precision = "f32"): Promise<Pipeline> {
    const key = `${name}/${precision}`;
    let pipeline = this.pipelines.get(key);
    if (!pipeline) {
      const dir = this.modelDir(name);
      if (!dir) throw new Error(`model "${name}" is not under the models root`);
      pipeline = this.device().then((gpu) => {
        if (precision === "f16" && !gpu.features.has("shader-f16")) throw new PrecisionError(gpu);
        return createPipeline(dir, { gpu, precision });
      });
      this.pipelines.set(key, pipeline);
      pipeline.catch(() => this.pipelines.delete(key));
      const limit = this.options.cacheSize ?? 2;
      while (this.pipelines.size > limit) {
        const [oldest, evicted] = this.pipelines.entries().next().value as [string, Promise<Pipeline>];
        this.pipelines.delete(oldest);
        evicted.then((loaded) => loaded.dispose()).catch(() => undefined);
      }
    } else {
      // Most recently used last.
      this.pipelines.delete(key);
      this.pipelines.set(key, pipeline);
    }
    const loaded = await pipeline;
    this.lastModel = name;
    return loaded;
  }

  async generate(
    request: ImageRequest,
    onStep: (step: number, total: number) => void,
  ): Promise<GeneratedImage> {
    const pipeline = await this.load(request.model, request.precision);
    const prompt =
      request.prompt ??
      (request.structured && {
        sex: request.structured.sex,
        age: request.structured.age,
        race: (request.structured.race ?? null) as never,
        findings: request.structured.findings,
      });
    if (!prompt) throw new Error("generate: neither prompt nor structured");
    const result = await pipeline.generate({
      prompt,
      n: 1,
      steps: request.steps,
      guidance: request.guidance,
      sampler: request.sampler,
      spacing: request.spacing,
      guidanceRescale: request.guidanceRescale,
      negativePrompt: negativePromptFor(request.negativePrompt ?? "", prompt),
      negativeGuidance: request.negativeGuidance ?? 1,
      seed: request.seed,
      bits: request.bitDepth,
      onStep: ({ step, steps }) => onStep(step, steps),
    });
    const image = result.images[0];
    return {
      png: new Uint8Array(image.png),
      sidecar: { ...image.metadata, modelName: request.model },
      width: image.size,
      height: image.size,
    };
  }

  async takeProfile(): Promise<unknown[]> {
    const gpu = this.gpuOpened;
    if (!gpu?.profiler.enabled) return [];
    await gpu.sync();
    const rows = gpu.profiler.rows();
    gpu.profiler.reset();
    return rows;
  }
}
