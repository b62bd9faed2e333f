/**
 * The HTTP API: one Hono app whose routes are declared with zod schemas (@hono/zod-openapi), so the
 * same schemas validate requests and produce `/openapi.json`. Errors are JSON
 * `{ error: { code, message, field? } }`; a validation error names the field; nothing answers with
 * a stack trace.
 */
import { readdirSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { DEFAULT_TRAIN_RUN, MODEL_CONFIG_NAMES, STRATEGIES } from "@cxr/classifier";
import { CHEXPERT_LABELS, RACES, SEXES } from "@cxr/data";
import { DIFFUSION_CONFIGS, negativePromptFor, PATIENT_PLACEHOLDER } from "@cxr/diffusion";
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import { HTTPException } from "hono/http-exception";
import { streamSSE } from "hono/streaming";
import type { TokenSet } from "./auth.ts";
import { BATCH_KIND, type BatchParams, submitBatch } from "./batch.ts";
import { PRECISIONS, type Precision, type ServerConfig } from "./config.ts";
import {
  FALLBACK_SAMPLING,
  type GenerationParams,
  type ImageGenerator,
  type ModelInfo,
  SAMPLERS,
  SAMPLING_FIELD_DEFAULTS,
  type SamplerName,
  SPACINGS,
} from "./generation.ts";
import { renderMetrics, sumProfiles } from "./metrics.ts";
import { checkName, PathRefused, resolveUnderRoot } from "./paths.ts";
import { Draining, type JobEvent, QueueFull, type WorkQueue } from "./queue.ts";
import { JOB_STATES, type Job, type JobStore, TERMINAL_STATES } from "./store.ts";
import { webPage } from "./web/page.ts";
import { apiReferencePage } from "./web/reference.ts";

/** Jobs that run on Redis workers (RedisJobs): the routes submit and cancel them here. */
export interface RemoteJobs {
  handles(kind: string): boolean;
  submit(kind: string, priority: number, params: Record<string, unknown>): Promise<Job>;
  cancel(id: string): Promise<Job | null>;
}

export interface Readiness {
  adapter: string | null;
  model: string | null;
}

export interface AppDependencies {
  config: ServerConfig;
  store: JobStore;
  queue: WorkQueue;
  generator: ImageGenerator;
  tokens: TokenSet;
  /** What /readyz reports: the WebGPU adapter and the loaded model, or null for each missing. */
  readiness: () => Readiness;
  /** Set when batch shards go to BullMQ on Redis (`--queue redis://...`) instead of this process. */
  redisBatches?: (params: BatchParams) => Promise<{ batch: Job; shards: string[] }>;
  /** Cancels a batch whose shards are on Redis: waiting shards removed, running ones marked. */
  cancelRedisBatch?: (batch: Job) => Promise<Job>;
  /** Set when generations, trainings and evaluations go to BullMQ on Redis (`--queue redis://...`). */
  remote?: RemoteJobs;
  log: (line: string) => void;
}

/** Priorities: interactive generation runs before shards, shards before training. */
export const PRIORITY = { generation: 20, shard: 10, training: 0 } as const;

const ErrorSchema = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: "invalid_request" }),
      message: z.string(),
      field: z.string().optional().openapi({ description: "the request field at fault, dotted" }),
    }),
  })
  .openapi("Error");

function errorBody(code: string, message: string, field?: string) {
  return { error: { code, message, ...(field ? { field } : {}) } };
}

/**
 * A request refused after validation (unknown model or dataset, a name taken, ...): thrown by the
 * route helpers and answered by the app's error handler, like QueueFull (429 with Retry-After) and
 * Draining (503) from `queue.submit`.
 */
export class Refusal extends Error {
  constructor(
    readonly status: 400 | 404 | 409 | 503,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = "Refusal";
  }
}

const JobProgressSchema = z.object({
  step: z.number().int(),
  total: z.number().int(),
  etaSeconds: z.number().nullable(),
  message: z.string().optional(),
});

const ImageRefSchema = z
  .object({
    id: z.string(),
    index: z.number().int(),
    seed: z.number().int(),
    url: z.string(),
    sidecarUrl: z.string(),
  })
  .openapi("ImageRef");

const JobSchema = z
  .object({
    id: z.string().openapi({ example: "job_019a1b2c3d4e5f6a7b8c" }),
    kind: z.string().openapi({ example: "generation" }),
    state: z.enum(JOB_STATES),
    priority: z.number().int(),
    params: z.record(z.string(), z.unknown()),
    progress: JobProgressSchema.nullable(),
    result: z.record(z.string(), z.unknown()).nullable(),
    error: z.object({ code: z.string(), message: z.string() }).nullable(),
    parentId: z.string().nullable(),
    attempts: z.number().int(),
    createdAt: z.string(),
    startedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
    images: z.array(ImageRefSchema),
    links: z.object({ self: z.string(), events: z.string() }),
  })
  .openapi("Job");

const JobIdParam = z.object({
  id: z
    .string()
    .regex(/^job_[0-9a-f]{20}$/, "not a job id")
    .openapi({ param: { name: "id", in: "path" }, example: "job_019a1b2c3d4e5f6a7b8c" }),
});

const ImageIdParam = z.object({
  id: z
    .string()
    .regex(/^img_[0-9a-f]{20}_\d{1,6}$/, "not an image id")
    .openapi({ param: { name: "id", in: "path" }, example: "img_019a1b2c3d4e5f6a7b8c_0" }),
});

const json = <T extends z.ZodType>(schema: T, description: string) => ({
  content: { "application/json": { schema } },
  description,
});

const errors = {
  400: json(ErrorSchema, "invalid request: the error names the field"),
  401: json(ErrorSchema, "missing or wrong bearer token"),
};

/** What `queue.submit` can refuse with, on every route that queues a job. */
const queueRefusals = {
  429: json(ErrorSchema, "queue full"),
  503: json(ErrorSchema, "draining"),
};

/** A required JSON request body validated by `schema`. */
const jsonBody = <T extends z.ZodType>(schema: T) => ({
  body: { content: { "application/json": { schema } }, required: true },
});

/**
 * Why a negative prompt with `{patient}` cannot be written for a text prompt (it does not follow the
 * RoentGen-v2 template, so it names no patient), or null: refused at submission, not in the job.
 */
function patientProblem(negative: string, prompt: string): string | null {
  try {
    negativePromptFor(negative, prompt);
    return null;
  } catch (error) {
    return (error as Error).message;
  }
}

function schemas(config: ServerConfig) {
  const { limits } = config;
  const stepsField = z
    .number()
    .int()
    .min(1)
    .max(limits.maxSteps)
    .optional()
    .openapi({
      description: `denoising steps; default: the model's own (its config.json "sampling", e.g. 20 for the shipped phantom model), else ${FALLBACK_SAMPLING.steps}`,
    });
  /** How each image is sampled, shared by single generations and batches. */
  const samplingFields = {
    guidanceRescale: z.number().min(0).max(1).default(SAMPLING_FIELD_DEFAULTS.guidanceRescale).openapi({
      description:
        "guidance rescale phi (diffusers' guidance_rescale): each guided prediction pulled toward the conditional one's standard deviation; 0: off",
    }),
    negativePrompt: z
      .string()
      .max(limits.maxPromptLength)
      .default(SAMPLING_FIELD_DEFAULTS.negativePrompt)
      .openapi({
        description: `what classifier-free guidance steers away from (diffusers' negative_prompt); "": the empty prompt the model was trained with. ${PATIENT_PLACEHOLDER} stands for each prompt's demographic sentence ("70 year old WHITE female."): "${PATIENT_PLACEHOLDER}" guides the findings alone, "${PATIENT_PLACEHOLDER} No acute cardiopulmonary abnormality." steers away from the patient's normal film. Unused at guidance 1`,
        example: "",
      }),
    negativeGuidance: z
      .number()
      .min(0)
      .max(30)
      .default(SAMPLING_FIELD_DEFAULTS.negativeGuidance)
      .openapi({
        description: `the negative prompt's own guidance scale over the empty prompt: eps_0 + negativeGuidance (eps_negative - eps_0) + guidance (eps_prompt - eps_negative). 1: the plain negative prompt (two UNet rows per image); anything else costs a third row. With "${PATIENT_PLACEHOLDER}" it scales the demographics and guidance the findings`,
      }),
    sampler: z
      .enum(SAMPLERS)
      .optional()
      .openapi({
        description: `sampler; default: the model's own (its config.json "sampling", e.g. ddpm for the shipped phantom model), else "${FALLBACK_SAMPLING.sampler}"`,
      }),
    spacing: z.enum(SPACINGS).default(SAMPLING_FIELD_DEFAULTS.spacing).openapi({
      description:
        'timestep spacing of the sampler (diffusers\' timestep_spacing): "leading" (SD 2.1\'s; 10 steps start at t = 901), "trailing" (start at 999), "linspace" (999 to 0)',
    }),
  };
  const Structured = z
    .object({
      sex: z.enum(SEXES),
      age: z.number().int().min(0).max(120),
      race: z.enum(RACES).nullable().optional(),
      findings: z.array(z.enum(CHEXPERT_LABELS)).max(CHEXPERT_LABELS.length).default([]),
    })
    .strict()
    .openapi("StructuredPrompt");
  const GenerationRequest = z
    .object({
      prompt: z.string().min(1).max(limits.maxPromptLength).optional(),
      structured: Structured.optional(),
      n: z.number().int().min(1).max(limits.maxImagesPerRequest).default(1),
      steps: stepsField,
      guidance: z.number().min(0).max(30).default(3),
      ...samplingFields,
      seed: z
        .number()
        .int()
        .min(0)
        .max(2 ** 32 - 1)
        .optional()
        .openapi({ description: "image i uses seed + i; drawn at random and recorded when absent" }),
      bitDepth: z.union([z.literal(8), z.literal(16)]).default(8),
      precision: z
        .enum(PRECISIONS)
        .default(config.defaultPrecision)
        .openapi({
          description: `weights and activations of the text encoder and UNet: "f32", or "f16" (the f16 kernels: f32 arithmetic inside each, half the weight memory; needs the adapter feature shader-f16, else 400). Default: cxr serve --precision (here "${config.defaultPrecision}")`,
        }),
      size: z
        .number()
        .int()
        .min(8)
        .max(limits.maxImageSize)
        .optional()
        .openapi({ description: "image side in pixels; must be the model's own size" }),
      model: z
        .string()
        .min(1)
        .max(128)
        .optional()
        .openapi({ description: "a model name under the models root" }),
    })
    .strict()
    .superRefine((value, refine) => {
      if ((value.prompt === undefined) === (value.structured === undefined)) {
        refine.addIssue({
          code: "custom",
          path: ["prompt"],
          message: "give either prompt or structured, not both",
        });
      }
      const problem = value.prompt === undefined ? null : patientProblem(value.negativePrompt, value.prompt);
      if (problem) refine.addIssue({ code: "custom", path: ["negativePrompt"], message: problem });
    })
    .openapi("GenerationRequest");
  const Cell = z.union([
    z.object({ prompt: z.string().min(1).max(limits.maxPromptLength) }).strict(),
    z.object({ structured: Structured }).strict(),
  ]);
  const BatchRequest = z
    .object({
      name: z
        .string()
        .min(1)
        .max(128)
        .openapi({ description: "dataset name: written under the datasets root" }),
      cells: z
        .array(Cell)
        .min(1)
        .max(10_000)
        .openapi({ description: "grid rows: a prompt or structured fields each" }),
      seeds: z
        .array(
          z
            .number()
            .int()
            .min(0)
            .max(2 ** 32 - 1),
        )
        .min(1)
        .max(10_000),
      steps: stepsField,
      guidance: z.number().min(0).max(30).default(3),
      ...samplingFields,
      bitDepth: z.union([z.literal(8), z.literal(16)]).default(8),
      precision: z
        .enum(PRECISIONS)
        .default(config.defaultPrecision)
        .openapi({
          description: `weights and activations of the text encoder and UNet: "f32", or "f16" (the f16 kernels: f32 arithmetic inside each, half the weight memory; needs the adapter feature shader-f16, else 400). Default: cxr serve --precision (here "${config.defaultPrecision}")`,
        }),
      model: z.string().min(1).max(128).optional(),
      shardSize: z
        .number()
        .int()
        .min(1)
        .max(1000)
        .default(16)
        .openapi({ description: "images per shard job" }),
    })
    .strict()
    .superRefine((value, refine) => {
      if (value.cells.length * value.seeds.length > limits.maxBatchImages) {
        refine.addIssue({
          code: "custom",
          path: ["seeds"],
          message: `cells x seeds = ${value.cells.length * value.seeds.length} images, at most ${limits.maxBatchImages}`,
        });
      }
      if (new Set(value.seeds).size !== value.seeds.length) {
        refine.addIssue({ code: "custom", path: ["seeds"], message: "seeds repeat" });
      }
      for (const [index, cell] of value.cells.entries()) {
        const problem = "prompt" in cell ? patientProblem(value.negativePrompt, cell.prompt) : null;
        if (problem) {
          refine.addIssue({
            code: "custom",
            path: ["negativePrompt"],
            message: `cells[${index}]: ${problem}`,
          });
          break;
        }
      }
    })
    .openapi("GenerationBatchRequest");
  return { GenerationRequest, Structured, BatchRequest };
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function jobView(store: JobStore, job: Job) {
  return {
    id: job.id,
    kind: job.kind,
    state: job.state,
    priority: job.priority,
    params: job.params,
    progress: job.progress,
    result: job.result,
    error: job.error,
    parentId: job.parentId,
    attempts: job.attempts,
    createdAt: new Date(job.createdAt).toISOString(),
    startedAt: iso(job.startedAt),
    finishedAt: iso(job.finishedAt),
    images: store.images(job.id).map((image) => ({
      id: image.id,
      index: image.index,
      seed: image.seed,
      url: `/v1/images/${image.id}`,
      sidecarUrl: `/v1/images/${image.id}/sidecar`,
    })),
    links: { self: `/v1/jobs/${job.id}`, events: `/v1/jobs/${job.id}/events` },
  };
}

/** Waits until the job is finished or `seconds` pass; resolves with the job as it is then. */
function waitForJob(queue: WorkQueue, id: string, seconds: number): Promise<Job> {
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      unsubscribe();
      resolve(queue.store.get(id)!);
    };
    const unsubscribe = queue.subscribe(id, (event) => {
      if (event.type === "done" || event.type === "failed" || event.type === "cancelled") finish();
    });
    const timer = setTimeout(finish, seconds * 1000);
    if (TERMINAL_STATES.has(queue.store.get(id)!.state)) finish();
  });
}

function listEntries(
  root: string,
): { name: string; kind: "file" | "folder"; bytes: number; modifiedAt: string }[] {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const entries = [];
  for (const name of names.sort()) {
    try {
      checkName("name", name);
      const real = resolveUnderRoot("name", root, name);
      if (!real) continue;
      const info = statSync(real);
      entries.push({
        name,
        kind: info.isDirectory() ? ("folder" as const) : ("file" as const),
        bytes: info.isDirectory() ? 0 : info.size,
        modifiedAt: info.mtime.toISOString(),
      });
    } catch {
      // Names that are not plain, or symlinks out of the root, are not listed.
    }
  }
  return entries;
}

export function createApp(deps: AppDependencies): OpenAPIHono {
  const { config, store, queue, tokens, log } = deps;
  const { GenerationRequest, BatchRequest } = schemas(config);

  const app = new OpenAPIHono({
    defaultHook: (result, c) => {
      if (!result.success) {
        const issue = result.error.issues[0];
        const path = issue.path.map(String);
        if (issue.code === "unrecognized_keys") {
          const field = [...path, issue.keys[0]].join(".");
          return c.json(errorBody("invalid_request", `${field}: not a field of this request`, field), 400);
        }
        const field = path.join(".") || result.target;
        return c.json(errorBody("invalid_request", `${field}: ${issue.message}`, field), 400);
      }
    },
  });

  app.onError((error, c) => {
    if (error instanceof HTTPException) {
      const status = error.status;
      const message =
        status === 400 ? "the request body is not valid JSON" : error.message || "request refused";
      return c.json(errorBody(status === 400 ? "invalid_json" : "http_error", message), status);
    }
    if (error instanceof PathRefused) {
      return c.json(errorBody("path_refused", error.message, error.field), 400);
    }
    if (error instanceof Refusal)
      return c.json(errorBody(error.code, error.message, error.field), error.status);
    if (error instanceof QueueFull) {
      c.header("Retry-After", String(error.retryAfterSeconds));
      return c.json(errorBody("queue_full", error.message), 429);
    }
    if (error instanceof Draining) return c.json(errorBody("draining", error.message), 503);
    log(`internal error on ${c.req.method} ${c.req.path}: ${error.stack ?? String(error)}`);
    return c.json(errorBody("internal", "internal error; the server log has the details"), 500);
  });
  app.notFound((c) => c.json(errorBody("not_found", `no route ${c.req.method} ${c.req.path}`), 404));

  if (config.corsOrigins.length > 0) {
    app.use("*", cors({ origin: config.corsOrigins, allowHeaders: ["Authorization", "Content-Type"] }));
  }

  app.use("/v1/*", async (c, next) => {
    if (tokens.enabled && !tokens.accepts(c.req.header("authorization"))) {
      c.header("WWW-Authenticate", 'Bearer realm="cxr"');
      return c.json(
        errorBody("unauthorized", "a valid bearer token is required (Authorization: Bearer ...)"),
        401,
      );
    }
    await next();
  });
  app.use(
    "/v1/*",
    bodyLimit({
      maxSize: config.limits.maxBodyBytes,
      onError: (c) =>
        c.json(
          errorBody("body_too_large", `the request body exceeds ${config.limits.maxBodyBytes} bytes`),
          413,
        ),
    }),
  );

  // ---- what the submitting routes share ---------------------------------------------------------

  /** The model a request names (or the default), checked to be a model under the models root. */
  function modelFor(name: string | undefined): string {
    const model = name ?? config.defaultModel;
    if (!model) throw new Refusal(400, "invalid_request", "model: no model given and no default", "model");
    checkName("model", model);
    if (!deps.generator.hasModel(model)) {
      throw new Refusal(400, "unknown_model", `model: "${model}" is not under the models root`, "model");
    }
    return model;
  }

  /** What the generator knows of a model; a model that cannot load (bad config.json) is a 400 naming model. */
  function infoFor(model: string): ModelInfo | null | undefined {
    const info = deps.generator.modelInfo?.(model);
    if (info?.problem) {
      throw new Refusal(400, "invalid_model", `model: "${model}" cannot be loaded: ${info.problem}`, "model");
    }
    return info;
  }

  /**
   * A request's sampler and steps: its own, else the model's (config.json "sampling"), else
   * FALLBACK_SAMPLING. The model's steps obey the request limit too (400 naming steps).
   */
  function samplingFor(
    model: string,
    info: ModelInfo | null | undefined,
    body: { sampler?: SamplerName; steps?: number },
  ): { sampler: SamplerName; steps: number } {
    const steps = body.steps ?? info?.defaultSteps ?? FALLBACK_SAMPLING.steps;
    if (steps > config.limits.maxSteps) {
      throw new Refusal(
        400,
        "invalid_request",
        `steps: model "${model}" samples with ${steps} steps by default, over this server's limit of ${config.limits.maxSteps}; give steps`,
        "steps",
      );
    }
    return { sampler: body.sampler ?? info?.defaultSampler ?? FALLBACK_SAMPLING.sampler, steps };
  }

  /** A precision the generator can run here (f16 needs the adapter's shader-f16): 400 naming the field. */
  async function checkPrecision(precision: Precision): Promise<void> {
    const problem = await deps.generator.precisionProblem?.(precision);
    if (problem) throw new Refusal(400, "unsupported_precision", `precision: ${problem}`, "precision");
  }

  /** A name that must exist under the datasets root (datasets, predictions files). */
  function existing(field: string, name: string, code = "unknown_dataset"): void {
    if (!resolveUnderRoot(field, config.datasetsRoot, name)) {
      throw new Refusal(400, code, `${field}: "${name}" is not under the datasets root`, field);
    }
  }

  /** A name that must not exist yet under a root (a batch's dataset, a training's model). */
  function unused(field: string, root: string, name: string, what: string, code: string): void {
    checkName(field, name);
    if (resolveUnderRoot(field, root, name)) {
      throw new Refusal(409, code, `${field}: a ${what} named "${name}" exists`, field);
    }
  }

  /** Queues one job (refusals, 429 and 503, go to the error handler) and answers 202 with it. */
  async function accept(c: Context, kind: string, priority: number, params: Record<string, unknown>) {
    return answered(c, await submitOne(kind, priority, params), 202);
  }

  /** One job into this server's queue, or to the Redis workers when the kind goes there. */
  async function submitOne(kind: string, priority: number, params: Record<string, unknown>): Promise<Job> {
    if (deps.remote?.handles(kind)) {
      if (queue.draining) throw new Draining();
      try {
        return await deps.remote.submit(kind, priority, params);
      } catch (error) {
        if (error instanceof Draining || error instanceof QueueFull) throw error;
        log(`redis queue: ${(error as Error).stack ?? error}`);
        throw new Refusal(503, "queue_unavailable", "the Redis queue did not take the job");
      }
    }
    return queue.submit([{ kind, priority, params }])[0];
  }

  function answered<S extends 200 | 202>(c: Context, job: Job, status: S) {
    c.header("Location", `/v1/jobs/${job.id}`);
    return c.json(jobView(store, job), status);
  }

  // ---- health, readiness, metrics --------------------------------------------------------------

  app.openapi(
    createRoute({
      method: "get",
      path: "/healthz",
      tags: ["operations"],
      summary: "liveness: the process answers",
      responses: { 200: json(z.object({ status: z.literal("ok") }), "alive") },
    }),
    (c) => c.json({ status: "ok" as const }, 200),
  );

  const ReadySchema = z.object({
    ready: z.boolean(),
    adapter: z.string().nullable(),
    model: z.string().nullable(),
    draining: z.boolean(),
    reasons: z.array(z.string()),
  });
  app.openapi(
    createRoute({
      method: "get",
      path: "/readyz",
      tags: ["operations"],
      summary: "readiness: a WebGPU adapter is present and a model is loaded",
      responses: { 200: json(ReadySchema, "ready"), 503: json(ReadySchema, "not ready, with reasons") },
    }),
    (c) => {
      const { adapter, model } = deps.readiness();
      const reasons: string[] = [];
      if (!adapter) reasons.push("no WebGPU adapter");
      if (!model) reasons.push("no model loaded");
      if (queue.draining) reasons.push("draining");
      const body = { ready: reasons.length === 0, adapter, model, draining: queue.draining, reasons };
      return c.json(body, reasons.length === 0 ? 200 : 503);
    },
  );

  app.get("/metrics", (c) => {
    c.header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    return c.body(renderMetrics(store, queue));
  });

  // ---- generations ------------------------------------------------------------------------------

  app.openapi(
    createRoute({
      method: "post",
      path: "/v1/generations",
      tags: ["generation"],
      summary: "generate images from a prompt or structured demographics and findings",
      security: [{ bearer: [] }],
      request: {
        query: z.object({
          wait: z.coerce
            .number()
            .int()
            .min(0)
            .max(config.limits.maxWaitSeconds)
            .optional()
            .openapi({ description: "seconds to wait for a small job to finish before answering" }),
        }),
        ...jsonBody(GenerationRequest),
      },
      responses: {
        200: json(JobSchema, "the job finished while the request waited"),
        202: json(JobSchema, "the job is queued; follow links.events"),
        ...errors,
        413: json(ErrorSchema, "request body too large"),
        429: json(ErrorSchema, "queue full; retry after the Retry-After header's seconds"),
        503: json(ErrorSchema, "the server is draining"),
      },
    }),
    async (c) => {
      const body = c.req.valid("json");
      const { wait } = c.req.valid("query");
      const model = modelFor(body.model);
      await checkPrecision(body.precision);
      const info = infoFor(model);
      if (body.size !== undefined && info?.size !== undefined && body.size !== info.size) {
        throw new Refusal(
          400,
          "invalid_request",
          `size: model "${model}" makes ${info.size} px images, not ${body.size}`,
          "size",
        );
      }
      const params: GenerationParams = {
        model,
        ...(body.prompt !== undefined ? { prompt: body.prompt } : {}),
        ...(body.structured !== undefined
          ? { structured: { ...body.structured, race: body.structured.race ?? null } }
          : {}),
        n: body.n,
        ...samplingFor(model, info, body),
        guidance: body.guidance,
        spacing: body.spacing,
        guidanceRescale: body.guidanceRescale,
        negativePrompt: body.negativePrompt,
        negativeGuidance: body.negativeGuidance,
        seed: body.seed ?? Math.floor(Math.random() * 2 ** 32),
        bitDepth: body.bitDepth,
        precision: body.precision,
      };
      let job = await submitOne("generation", PRIORITY.generation, { ...params });
      if (wait && params.n * params.steps <= config.limits.smallJobSteps) {
        job = await waitForJob(queue, job.id, wait);
      }
      return answered(c, job, TERMINAL_STATES.has(job.state) ? 200 : 202);
    },
  );

  // ---- generation batches -------------------------------------------------------------------------

  app.openapi(
    createRoute({
      method: "post",
      path: "/v1/generation-batches",
      tags: ["generation"],
      summary: "a grid of cells x seeds written as a CheXpert-layout dataset with a manifest, in shard jobs",
      security: [{ bearer: [] }],
      request: jsonBody(BatchRequest),
      responses: {
        202: json(
          z.object({ batch: JobSchema, shards: z.array(z.string()) }),
          "the batch and its shard jobs",
        ),
        ...errors,
        409: json(ErrorSchema, "a dataset of that name exists"),
        ...queueRefusals,
      },
    }),
    async (c) => {
      const body = c.req.valid("json");
      const model = modelFor(body.model);
      await checkPrecision(body.precision);
      unused("name", config.datasetsRoot, body.name, "dataset", "dataset_exists");
      const sampling = samplingFor(model, infoFor(model), body);
      const cells = body.cells.map((cell) =>
        "prompt" in cell
          ? { prompt: cell.prompt }
          : { structured: { ...cell.structured, race: cell.structured.race ?? null } },
      );
      if (deps.redisBatches) {
        if (queue.draining) throw new Draining();
        try {
          const { batch, shards } = await deps.redisBatches({ ...body, ...sampling, model, cells });
          c.header("Location", `/v1/jobs/${batch.id}`);
          return c.json({ batch: jobView(store, batch), shards }, 202);
        } catch (error) {
          log(`redis queue: ${(error as Error).stack ?? error}`);
          return c.json(errorBody("queue_unavailable", "the Redis queue did not take the shards"), 503);
        }
      }
      const { batch, shards } = submitBatch(queue, { ...body, ...sampling, model, cells }, PRIORITY.shard);
      c.header("Location", `/v1/jobs/${batch.id}`);
      return c.json({ batch: jobView(store, batch), shards: shards.map((shard) => shard.id) }, 202);
    },
  );

  // ---- trainings --------------------------------------------------------------------------------

  const seedField = z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1)
    .default(1);
  const outputField = z
    .string()
    .min(1)
    .max(128)
    .optional()
    .openapi({ description: "model name to publish the result under; default trained-<time>" });
  const DiffusionTraining = z
    .object({
      kind: z.literal("diffusion").openapi({ description: "a diffusion model (trainDiffusion)" }),
      dataset: z.string().min(1).max(128).openapi({ description: "a dataset name under the datasets root" }),
      config: z.enum(Object.keys(DIFFUSION_CONFIGS) as [string, ...string[]]).default("phantom-small"),
      steps: z.number().int().min(1).max(config.limits.maxTrainingSteps),
      batchSize: z.number().int().min(1).max(256).default(16),
      seed: z
        .number()
        .int()
        .min(0)
        .max(2 ** 31 - 1)
        .default(1),
      learningRate: z.number().positive().max(1).default(2e-4),
      checkpointEvery: z.number().int().min(1).max(1_000_000).default(200),
      output: outputField,
    })
    .strict()
    .openapi("DiffusionTrainingRequest");
  const epochsField = (fallback: number) => z.number().int().min(1).max(1000).default(fallback);
  const ClassifierTraining = z
    .object({
      kind: z.literal("classifier").openapi({ description: "a classifier (cxr train classifier's run)" }),
      dataset: z
        .string()
        .min(1)
        .max(128)
        .openapi({ description: "real dataset name (CheXpert layout, train/valid/test splits)" }),
      config: z.enum(MODEL_CONFIG_NAMES).default(DEFAULT_TRAIN_RUN.config as "densenet-bc-phantom"),
      strategy: z.enum(STRATEGIES).default("real"),
      synthetic: z
        .string()
        .min(1)
        .max(128)
        .optional()
        .openapi({ description: "synthetic dataset name (mix, pretrain-finetune)" }),
      mixRatio: z
        .number()
        .gt(0)
        .lt(1)
        .default(DEFAULT_TRAIN_RUN.mixRatio)
        .openapi({ description: "share of each mix batch drawn from the synthetic set" }),
      epochs: epochsField(DEFAULT_TRAIN_RUN.epochs).openapi({
        description: "epochs of the real, mix or fine-tuning phase (the classifier trains in epochs)",
      }),
      pretrainEpochs: epochsField(DEFAULT_TRAIN_RUN.pretrainEpochs),
      batchSize: z.number().int().min(1).max(256).default(DEFAULT_TRAIN_RUN.batchSize),
      imageSize: z.number().int().min(8).max(config.limits.maxImageSize).optional(),
      learningRate: z.number().positive().max(1).default(DEFAULT_TRAIN_RUN.learningRate),
      seed: seedField,
      institution: z
        .string()
        .regex(/^[A-Za-z0-9._-]{1,64}$/, "a plain institution name")
        .optional()
        .openapi({ description: "train, select and test on this institution only" }),
      bootstrapRounds: z.number().int().min(0).max(10_000).default(DEFAULT_TRAIN_RUN.bootstrapRounds),
      output: outputField,
    })
    .strict()
    .superRefine((value, refine) => {
      if (value.strategy !== "real" && value.synthetic === undefined) {
        refine.addIssue({
          code: "custom",
          path: ["synthetic"],
          message: `strategy ${value.strategy} needs a synthetic dataset`,
        });
      }
    })
    .openapi("ClassifierTrainingRequest");
  const TrainingRequest = z
    .discriminatedUnion("kind", [DiffusionTraining, ClassifierTraining])
    .openapi("TrainingRequest");
  app.openapi(
    createRoute({
      method: "post",
      path: "/v1/trainings",
      tags: ["training"],
      summary: "train a model on a named dataset; yields to generations between steps, resumes after a crash",
      security: [{ bearer: [] }],
      request: jsonBody(TrainingRequest),
      responses: {
        202: json(JobSchema, "the training job is queued"),
        ...errors,
        409: json(ErrorSchema, "a model of the output name exists"),
        ...queueRefusals,
      },
    }),
    async (c) => {
      const body = c.req.valid("json");
      existing("dataset", body.dataset);
      if (body.kind === "classifier" && body.synthetic !== undefined) existing("synthetic", body.synthetic);
      const output = body.output ?? `trained-${Date.now().toString(36)}`;
      unused("output", config.modelsRoot, output, "model", "model_exists");
      return accept(c, "training", PRIORITY.training, { ...body, output });
    },
  );

  // ---- evaluations ------------------------------------------------------------------------------

  const EvaluationRequest = z
    .object({
      predictions: z
        .string()
        .min(1)
        .max(128)
        .openapi({ description: "a predictions CSV name under the datasets root" }),
      validation: z
        .string()
        .min(1)
        .max(128)
        .optional()
        .openapi({ description: "validation predictions CSV: thresholds maximise F1 on it" }),
      bootstrapRounds: z.number().int().min(0).max(10_000).default(200),
      seed: z
        .number()
        .int()
        .min(0)
        .max(2 ** 31 - 1)
        .default(20211210),
    })
    .strict()
    .openapi("EvaluationRequest");
  app.openapi(
    createRoute({
      method: "post",
      path: "/v1/evaluations",
      tags: ["evaluation"],
      summary: "AUROC, thresholds and subgroup underdiagnosis gaps of a predictions file, as a job",
      security: [{ bearer: [] }],
      request: jsonBody(EvaluationRequest),
      responses: {
        202: json(JobSchema, "the evaluation job"),
        ...errors,
        ...queueRefusals,
      },
    }),
    async (c) => {
      const body = c.req.valid("json");
      for (const field of ["predictions", "validation"] as const) {
        const name = body[field];
        if (name !== undefined) existing(field, name, "not_found");
      }
      return accept(c, "evaluation", PRIORITY.shard, { ...body });
    },
  );
  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/evaluations/{id}",
      tags: ["evaluation"],
      summary:
        "the evaluation document of a finished evaluation (evaluation.json: AUROC, thresholds, subgroups, gaps with intervals)",
      security: [{ bearer: [] }],
      request: { params: JobIdParam },
      responses: {
        200: json(z.record(z.string(), z.unknown()), "evaluation.json (schema cxr-evaluation)"),
        404: json(ErrorSchema, "no such finished evaluation"),
        ...errors,
      },
    }),
    async (c) => {
      const job = store.get(c.req.valid("param").id);
      if (job?.kind !== "evaluation" || job.state !== "succeeded") {
        return c.json(errorBody("not_found", "no finished evaluation with that id"), 404);
      }
      const text = await readFile(join(config.dataRoot, "evaluations", job.id, "evaluation.json"), "utf8");
      return c.json(JSON.parse(text) as Record<string, unknown>, 200);
    },
  );
  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/evaluations/{id}/report",
      tags: ["evaluation"],
      summary: "the Markdown report of a finished evaluation",
      security: [{ bearer: [] }],
      request: { params: JobIdParam },
      responses: {
        200: { content: { "text/markdown": { schema: z.string() } }, description: "report.md" },
        404: json(ErrorSchema, "no such finished evaluation"),
        ...errors,
      },
    }),
    async (c) => {
      const job = store.get(c.req.valid("param").id);
      if (job?.kind !== "evaluation" || job.state !== "succeeded") {
        return c.json(errorBody("not_found", "no finished evaluation with that id"), 404);
      }
      const text = await readFile(join(config.dataRoot, "evaluations", job.id, "report.md"), "utf8");
      return c.body(text, 200, { "Content-Type": "text/markdown; charset=utf-8" });
    },
  );

  // ---- jobs --------------------------------------------------------------------------------------

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/jobs",
      tags: ["jobs"],
      summary: "list jobs, newest first",
      security: [{ bearer: [] }],
      request: {
        query: z.object({
          state: z.enum(JOB_STATES).optional(),
          kind: z.string().max(64).optional(),
          limit: z.coerce.number().int().min(1).max(500).default(50),
          before: z
            .string()
            .regex(/^job_[0-9a-f]{20}$/, "not a job id")
            .optional(),
        }),
      },
      responses: { 200: json(z.object({ jobs: z.array(JobSchema) }), "jobs"), ...errors },
    }),
    (c) => {
      const query = c.req.valid("query");
      const jobs = store.list(query).map((job) => jobView(store, job));
      return c.json({ jobs }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/jobs/{id}",
      tags: ["jobs"],
      summary: "one job with its progress, result and images",
      security: [{ bearer: [] }],
      request: { params: JobIdParam },
      responses: { 200: json(JobSchema, "the job"), 404: json(ErrorSchema, "no such job"), ...errors },
    }),
    (c) => {
      const job = store.get(c.req.valid("param").id);
      if (!job) return c.json(errorBody("not_found", "no such job"), 404);
      return c.json(jobView(store, job), 200);
    },
  );

  app.openapi(
    createRoute({
      method: "delete",
      path: "/v1/jobs/{id}",
      tags: ["jobs"],
      summary: "cancel: a queued job at once, a running one at its next step",
      security: [{ bearer: [] }],
      request: { params: JobIdParam },
      responses: {
        202: json(JobSchema, "cancellation requested (or done)"),
        404: json(ErrorSchema, "no such job"),
        409: json(ErrorSchema, "the job already finished"),
        ...errors,
      },
    }),
    async (c) => {
      const id = c.req.valid("param").id;
      const before = store.get(id);
      if (!before) return c.json(errorBody("not_found", "no such job"), 404);
      if (TERMINAL_STATES.has(before.state)) {
        return c.json(errorBody("already_finished", `the job is already ${before.state}`), 409);
      }
      if (before.kind === BATCH_KIND && (before.params as { queue?: string }).queue === "redis") {
        if (!deps.cancelRedisBatch) {
          return c.json(
            errorBody("not_supported", "this server has no Redis queue for the batch's shards"),
            409,
          );
        }
        return c.json(jobView(store, await deps.cancelRedisBatch(before)), 202);
      }
      if (before.kind === BATCH_KIND) {
        for (const shard of store.list({ parentId: id, limit: 100_000 })) {
          if (!TERMINAL_STATES.has(shard.state)) queue.cancel(shard.id);
        }
        return c.json(jobView(store, store.get(id)!), 202);
      }
      if (before.params.queue === "redis" && deps.remote?.handles(before.kind)) {
        const job = (await deps.remote.cancel(id))!;
        return c.json(jobView(store, job), 202);
      }
      const job = queue.cancel(id)!;
      return c.json(jobView(store, job), 202);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/jobs/{id}/events",
      tags: ["jobs"],
      summary:
        "server-sent events: queued, started, progress (step, total, ETA), then done, failed or cancelled",
      security: [{ bearer: [] }],
      request: { params: JobIdParam },
      responses: {
        200: { content: { "text/event-stream": { schema: z.string() } }, description: "the event stream" },
        404: json(ErrorSchema, "no such job"),
        ...errors,
      },
    }),
    (c) => {
      const id = c.req.valid("param").id;
      if (!store.get(id)) return c.json(errorBody("not_found", "no such job"), 404) as never;
      return streamSSE(c, async (stream) => {
        const pending: JobEvent[] = [];
        let wake: (() => void) | null = null;
        const unsubscribe = queue.subscribe(id, (event) => {
          pending.push(event);
          wake?.();
        });
        stream.onAbort(() => {
          unsubscribe();
          wake?.();
        });
        let lastStep = -1;
        let started = false;
        const send = async (type: string, job: Job, extra: Record<string, unknown> = {}) => {
          await stream.writeSSE({
            event: type,
            data: JSON.stringify({ id: job.id, state: job.state, ...extra }),
          });
        };
        try {
          const job = store.get(id)!;
          await send("queued", job);
          if (job.state !== "queued") {
            await send("started", job);
            started = true;
          }
          if (job.progress && job.state === "running") {
            await send("progress", job, job.progress as unknown as Record<string, unknown>);
            lastStep = job.progress.step;
          }
          if (TERMINAL_STATES.has(job.state)) {
            const type = job.state === "succeeded" ? "done" : job.state === "failed" ? "failed" : "cancelled";
            await send(type, job, type === "done" ? { result: job.result } : { error: job.error });
            return;
          }
          for (;;) {
            if (stream.aborted) return;
            const event = pending.shift();
            if (!event) {
              const keepalive = setTimeout(
                () => stream.write(": keepalive\n\n").catch(() => undefined),
                15_000,
              );
              await new Promise<void>((resolve) => {
                wake = resolve;
              });
              clearTimeout(keepalive);
              wake = null;
              continue;
            }
            if (event.type === "queued") continue;
            if (event.type === "started") {
              if (!started) await send("started", event.job);
              started = true;
              continue;
            }
            if (event.type === "progress") {
              if (event.progress.step <= lastStep) continue;
              if (!started) await send("started", event.job);
              started = true;
              lastStep = event.progress.step;
              await send("progress", event.job, event.progress as unknown as Record<string, unknown>);
              continue;
            }
            const final = store.get(id)!;
            await send(
              event.type,
              final,
              event.type === "done" ? { result: final.result } : { error: final.error },
            );
            return;
          }
        } finally {
          unsubscribe();
        }
      });
    },
  );

  // ---- images ------------------------------------------------------------------------------------

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/images/{id}",
      tags: ["images"],
      summary: "a generated image as PNG (8 or 16 bits, grayscale)",
      security: [{ bearer: [] }],
      request: { params: ImageIdParam },
      responses: {
        200: {
          content: { "image/png": { schema: z.string().openapi({ format: "binary" }) } },
          description: "PNG",
        },
        404: json(ErrorSchema, "no such image"),
        ...errors,
      },
    }),
    async (c) => {
      const image = store.image(c.req.valid("param").id);
      if (!image) return c.json(errorBody("not_found", "no such image"), 404);
      const bytes = await readFile(image.path);
      return c.body(bytes, 200, {
        "Content-Type": "image/png",
        "Cache-Control": "private, max-age=31536000, immutable",
      });
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/images/{id}/sidecar",
      tags: ["images"],
      summary: "the image's JSON sidecar: every parameter needed to make it again",
      security: [{ bearer: [] }],
      request: { params: ImageIdParam },
      responses: {
        200: json(z.record(z.string(), z.unknown()), "the sidecar"),
        404: json(ErrorSchema, "no such image"),
        ...errors,
      },
    }),
    async (c) => {
      const image = store.image(c.req.valid("param").id);
      if (!image) return c.json(errorBody("not_found", "no such image"), 404);
      return c.json(JSON.parse(await readFile(image.sidecarPath, "utf8")) as Record<string, unknown>, 200);
    },
  );

  // ---- models, datasets, profile ----------------------------------------------------------------

  const EntrySchema = z.object({
    name: z.string(),
    kind: z.enum(["file", "folder"]),
    bytes: z.number().int(),
    modifiedAt: z.string(),
  });
  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/models",
      tags: ["catalogue"],
      summary: "the models under the models root",
      security: [{ bearer: [] }],
      responses: {
        200: json(z.object({ default: z.string().nullable(), models: z.array(EntrySchema) }), "models"),
        ...errors,
      },
    }),
    (c) => c.json({ default: config.defaultModel, models: listEntries(config.modelsRoot) }, 200),
  );
  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/datasets",
      tags: ["catalogue"],
      summary: "the datasets under the datasets root",
      security: [{ bearer: [] }],
      responses: { 200: json(z.object({ datasets: z.array(EntrySchema) }), "datasets"), ...errors },
    }),
    (c) => c.json({ datasets: listEntries(config.datasetsRoot) }, 200),
  );

  const ProfileRowSchema = z.object({
    name: z.string(),
    variant: z.string(),
    calls: z.number(),
    milliseconds: z.number().nullable(),
    flops: z.number(),
    bytes: z.number(),
  });
  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/profile",
      tags: ["operations"],
      summary: "per-kernel GPU time of recent jobs, summed per kernel and variant",
      security: [{ bearer: [] }],
      request: { query: z.object({ jobs: z.coerce.number().int().min(1).max(1000).default(50) }) },
      responses: {
        200: json(z.object({ jobs: z.array(z.string()), kernels: z.array(ProfileRowSchema) }), "the table"),
        ...errors,
      },
    }),
    (c) => {
      const profiles = store.recentProfiles(c.req.valid("query").jobs);
      return c.json(
        { jobs: profiles.map((p) => p.jobId), kernels: sumProfiles(profiles.map((p) => p.rows)) },
        200,
      );
    },
  );

  // ---- documents and the page -----------------------------------------------------------------

  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", { type: "http", scheme: "bearer" });
  app.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: {
      title: "cxr server",
      version: "1",
      description:
        "Chest-radiograph generation and training over HTTP. Every /v1 route needs `Authorization: Bearer TOKEN` when the server has tokens.",
    },
  });
  app.get("/docs", (c) => c.html(apiReferencePage()));
  app.get("/", (c) => c.html(webPage()));
  return app;
}
