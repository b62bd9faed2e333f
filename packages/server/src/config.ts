/** Server settings and request limits, with the defaults `cxr serve` uses. */
import { join, resolve } from "node:path";

/** Generation precision: "f16" runs the model's f16 kernels (needs the adapter's shader-f16). */
export const PRECISIONS = ["f32", "f16"] as const;
export type Precision = (typeof PRECISIONS)[number];

export interface Limits {
  /** Queued jobs before a submission is answered 429 with Retry-After. */
  maxQueueDepth: number;
  /** Request body bytes (413 beyond). */
  maxBodyBytes: number;
  /** Images in one generation request (`n`). */
  maxImagesPerRequest: number;
  /** Sampler steps. */
  maxSteps: number;
  /** Largest image side in pixels a request may ask for (`size`). */
  maxImageSize: number;
  /** Longest `?wait=` in seconds. */
  maxWaitSeconds: number;
  /** `?wait=` waits only for jobs of at most this many model calls (n x steps). */
  smallJobSteps: number;
  /** Images in one generation batch (cells x seeds). */
  maxBatchImages: number;
  /** Prompt characters. */
  maxPromptLength: number;
  /** Optimizer steps of one training. */
  maxTrainingSteps: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxQueueDepth: 64,
  maxBodyBytes: 64 * 1024,
  maxImagesPerRequest: 16,
  maxSteps: 250,
  maxImageSize: 512,
  maxWaitSeconds: 120,
  smallJobSteps: 400,
  maxBatchImages: 10_000,
  maxPromptLength: 1000,
  maxTrainingSteps: 1_000_000,
};

export interface ServerConfig {
  /** Jobs database (`jobs.sqlite`), images, batches. */
  dataRoot: string;
  /** Models are referred to by name: folders (or files) directly under this root. */
  modelsRoot: string;
  /** Datasets likewise, under this root. */
  datasetsRoot: string;
  /** Bearer tokens; empty = no authentication. */
  tokens: string[];
  /** Origins allowed by CORS; empty = CORS off (no headers sent). */
  corsOrigins: string[];
  /** Model used when a request names none. */
  defaultModel: string | null;
  /** Precision of a generation request that names none (`cxr serve --precision`, default f32). */
  defaultPrecision: Precision;
  limits: Limits;
}

export function defaultConfig(overrides: Partial<ServerConfig> & { dataRoot: string }): ServerConfig {
  const dataRoot = resolve(overrides.dataRoot);
  return {
    modelsRoot: join(dataRoot, "models"),
    datasetsRoot: join(dataRoot, "datasets"),
    tokens: [],
    corsOrigins: [],
    defaultModel: null,
    defaultPrecision: "f32",
    ...overrides,
    dataRoot,
    limits: { ...DEFAULT_LIMITS, ...overrides.limits },
  };
}
