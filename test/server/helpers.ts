/**
 * Test helpers for the server suites: a temporary data root, a server on loopback port 0, and
 * `StepGenerator`, a stand-in generator used ONLY for the job-system tests that depend on timing
 * (cancellation at the next step, training yielding to generation, SSE order, queue limits, the
 * kill -9 restart). It calls the same per-step hook as the real generator, `stepMs` apart, and
 * returns a PNG whose pixels are a function of the seed and the prompt, so reruns can be compared
 * byte for byte. The generation endpoints are also tested on the real @cxr/diffusion generator.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generatePhantomDataset } from "@cxr/data";
import sharp from "sharp";
import type { ImageGenerator, ImageRequest, ModelInfo } from "../../packages/server/src/generation.ts";
import {
  type JobContext,
  type JobRunner,
  type StartServerOptions,
  startServer,
} from "../../packages/server/src/index.ts";

export function temporaryRoot(prefix = "cxr-server-"): { root: string; remove: () => void } {
  const root = mkdtempSync(join(tmpdir(), prefix));
  return { root, remove: () => rmSync(root, { recursive: true, force: true }) };
}

/**
 * A small phantom dataset at 64 px for the server's training and evaluation tests: by default the 24
 * northgate films the generator trainings use; the classifier tests ask for more films elsewhere.
 */
export async function writeTestPhantom(
  outDir: string,
  {
    count = 24,
    institution = "northgate",
    seed = 3,
  }: { count?: number; institution?: string; seed?: number } = {},
): Promise<void> {
  await generatePhantomDataset({ outDir, count, size: 64, institutions: [institution], seed });
}

export class StepGenerator implements ImageGenerator {
  calls: ImageRequest[] = [];
  constructor(
    readonly models: Record<string, ModelInfo>,
    readonly stepMs = 0,
  ) {}

  hasModel(name: string): boolean {
    return name in this.models;
  }

  modelInfo(name: string): ModelInfo | null {
    return this.models[name] ?? null;
  }

  async generate(request: ImageRequest, onStep: (step: number, total: number) => void) {
    this.calls.push(request);
    for (let step = 1; step <= request.steps; step++) {
      if (this.stepMs > 0) await new Promise((resolve) => setTimeout(resolve, this.stepMs));
      onStep(step, request.steps);
    }
    const size = this.models[request.model].size ?? 16;
    const text = request.prompt ?? JSON.stringify(request.structured);
    let hash = request.seed >>> 0;
    for (const char of text) hash = Math.imul(hash ^ char.charCodeAt(0), 16777619) >>> 0;
    const pixels = new Uint8Array(size * size);
    for (let index = 0; index < pixels.length; index++) {
      hash = Math.imul(hash ^ (hash >>> 15), 2246822507) >>> 0;
      pixels[index] = hash & 255;
    }
    const png = await sharp(pixels, { raw: { width: size, height: size, channels: 1 } })
      .png()
      .toBuffer();
    return {
      png: new Uint8Array(png),
      sidecar: { generator: "test-step-generator", prompt: text, seed: request.seed, steps: request.steps },
      width: size,
      height: size,
    };
  }

  async takeProfile() {
    return [{ name: "test-kernel", variant: "cpu", calls: 3, flops: 10, bytes: 20, milliseconds: 1.5 }];
  }
}

/**
 * A training-like job used only in tests: `steps` steps `stepMs` apart, each through ctx.step, so it
 * yields to queued generations and stops at the next step when cancelled. Records the order of events.
 */
export class StepTrainer implements JobRunner {
  readonly kinds = ["test-training"] as const;
  readonly log: string[] = [];
  constructor(readonly stepMs = 20) {}
  async run(ctx: JobContext) {
    const steps = Number(ctx.job.params.steps ?? 10);
    for (let step = 1; step <= steps; step++) {
      await new Promise((resolve) => setTimeout(resolve, this.stepMs));
      this.log.push(`train ${step}`);
      await ctx.step(step, steps);
    }
    return { result: { steps } };
  }
}

export async function startTestServer(options: Partial<StartServerOptions> & { generator: ImageGenerator }) {
  const temporary = options.dataRoot ? null : temporaryRoot();
  const logs: string[] = [];
  const server = await startServer({
    dataRoot: temporary?.root ?? options.dataRoot!,
    port: 0,
    defaultModel: "tiny",
    log: (line) => logs.push(line),
    ...options,
  });
  return {
    server,
    logs,
    url: server.url,
    async close() {
      await server.close();
      temporary?.remove();
    },
  };
}

/** POSTs `body` (JSON; a string is sent as it is) to `url`: the response, its status and its JSON body. */
export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { response, status: response.status, body: (await response.json()) as any };
}

export interface WaitOptions {
  timeoutMs?: number;
  /** Pause between probes. */
  everyMs?: number;
  /** Named in the timeout's error. */
  what?: string;
  /** A probe that throws counts as "not yet" (a server that is restarting). */
  ignoreErrors?: boolean;
}

/** Polls `probe` until it returns something other than undefined; throws naming `what` after the timeout. */
export async function waitUntil<T>(
  probe: () => Promise<T | undefined> | T | undefined,
  { timeoutMs = 20_000, everyMs = 50, what = "the condition", ignoreErrors = false }: WaitOptions = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = ignoreErrors
      ? await Promise.resolve()
          .then(probe)
          .catch(() => undefined)
      : await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** Reads an SSE stream until it ends or `timeoutMs` passes; returns the events in order. */
export async function readEvents(
  url: string,
  headers: Record<string, string> = {},
  timeoutMs = 20_000,
): Promise<{ type: string; data: Record<string, unknown> }[]> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const events: { type: string; data: Record<string, unknown> }[] = [];
  try {
    const response = await fetch(url, { headers, signal: controller.signal });
    if (!response.ok || !response.body) throw new Error(`events: HTTP ${response.status}`);
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let cut = buffer.indexOf("\n\n");
      while (cut >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const type = /^event: ?(.*)$/m.exec(block)?.[1];
        const data = /^data: ?(.*)$/m.exec(block)?.[1];
        if (type && data) events.push({ type, data: JSON.parse(data) });
        cut = buffer.indexOf("\n\n");
      }
    }
  } finally {
    clearTimeout(timer);
  }
  return events;
}
