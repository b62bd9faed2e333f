/**
 * `cxr bench server`: N concurrent generation requests over loopback HTTP against a model, next to
 * the same images generated in-process without HTTP. Prints accepted, completed, lost (must be 0),
 * p50/p99 latency from submission to the done event, images/s both ways, and whether the images
 * are byte-identical.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { createDiffusionModel, DIFFUSION_CONFIGS, promptFromFields, WordTokenizer } from "@cxr/diffusion";
import { DiffusionGenerator, serverGpu } from "./diffusion-generator.ts";
import { SAMPLING_FIELD_DEFAULTS, type SamplerName } from "./generation.ts";
import { startServer } from "./server.ts";

export interface ServerBenchOptions {
  requests: number;
  steps: number;
  sampler: SamplerName;
  /** A model folder; default models/phantom-diffusion, else an untrained model of `config`. */
  modelDir?: string;
  config: string;
  log?: (line: string) => void;
}

export interface ServerBenchResult {
  model: string;
  untrained: boolean;
  requests: number;
  accepted: number;
  rejected: number;
  completed: number;
  lost: number;
  latencyP50Seconds: number;
  latencyP99Seconds: number;
  httpImagesPerSecond: number;
  inProcessImagesPerSecond: number;
  identicalImages: number;
}

const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0
    ? Number.NaN
    : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
};

const PROMPTS = [
  promptFromFields({ sex: "female", age: 70, race: "WHITE", findings: ["Cardiomegaly"] }),
  promptFromFields({ sex: "male", age: 45, race: "BLACK", findings: [] }),
  promptFromFields({ sex: "female", age: 30, race: "ASIAN", findings: ["Pleural Effusion"] }),
  promptFromFields({ sex: "male", age: 82, race: "HISPANIC", findings: ["Edema", "Cardiomegaly"] }),
];

export async function benchServer(options: ServerBenchOptions): Promise<ServerBenchResult> {
  const log = options.log ?? ((line: string) => console.error(line));
  const scratch = mkdtempSync(join(tmpdir(), "cxr-bench-server-"));
  try {
    let modelDir = options.modelDir ? resolve(options.modelDir) : resolve("models/phantom-diffusion");
    let untrained = false;
    if (!existsSync(join(modelDir, "config.json"))) {
      if (options.modelDir)
        throw new Error(`--model-dir ${options.modelDir}: no model there (config.json missing)`);
      const config = DIFFUSION_CONFIGS[options.config as keyof typeof DIFFUSION_CONFIGS];
      if (!config)
        throw new Error(
          `--config ${options.config}: not one of ${Object.keys(DIFFUSION_CONFIGS).join(", ")}`,
        );
      log(
        `no models/phantom-diffusion: timing an untrained ${options.config} (same cost per image as trained weights)`,
      );
      const tokenizer = WordTokenizer.fromPrompts(PROMPTS, { maxLength: config.textEncoder.maxPositions });
      const model = createDiffusionModel(await serverGpu(), structuredClone(config), tokenizer, 1);
      modelDir = join(scratch, "models", options.config);
      await model.save(modelDir);
      model.dispose();
      untrained = true;
    }
    const modelsRoot = dirname(modelDir);
    const name = basename(modelDir);
    const generator = new DiffusionGenerator({ modelsRoot });
    const request = (index: number) => ({
      model: name,
      prompt: PROMPTS[index % PROMPTS.length],
      steps: options.steps,
      guidance: 3,
      sampler: options.sampler,
      seed: 1000 + index,
      bitDepth: 8 as const,
      ...SAMPLING_FIELD_DEFAULTS,
    });
    // Warm-up: load the model and compile the shaders.
    await generator.generate({ ...request(0), steps: 2 }, () => undefined);
    log(`in-process: ${options.requests} images, ${options.steps} ${options.sampler} steps each`);
    const reference: Uint8Array[] = [];
    let started = performance.now();
    for (let index = 0; index < options.requests; index++) {
      reference.push((await generator.generate(request(index), () => undefined)).png);
    }
    const inProcessSeconds = (performance.now() - started) / 1000;

    const server = await startServer({
      dataRoot: join(scratch, "data"),
      modelsRoot,
      defaultModel: name,
      port: 0,
      generator,
      limits: { maxQueueDepth: Math.max(64, options.requests) } as never,
      log: () => undefined,
    });
    log(`HTTP: ${options.requests} concurrent requests to ${server.url}`);
    try {
      started = performance.now();
      const outcomes = await Promise.all(
        Array.from({ length: options.requests }, async (_, index) => {
          const sent = performance.now();
          const { model: _model, bitDepth, ...rest } = request(index);
          const response = await fetch(`${server.url}/v1/generations`, {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ ...rest, bitDepth, n: 1 }),
          });
          if (response.status !== 202) return { accepted: false, done: false, latency: 0, png: null };
          const job = (await response.json()) as { id: string; links: { events: string } };
          const events = await fetch(`${server.url}${job.links.events}`);
          const text = await events.text();
          const done = /^event: done$/m.test(text);
          const latency = (performance.now() - sent) / 1000;
          let png: Uint8Array | null = null;
          if (done) {
            const view = (await (await fetch(`${server.url}/v1/jobs/${job.id}`)).json()) as {
              images: { url: string }[];
            };
            png = new Uint8Array(await (await fetch(`${server.url}${view.images[0].url}`)).arrayBuffer());
          }
          return { accepted: true, done, latency, png };
        }),
      );
      const httpSeconds = (performance.now() - started) / 1000;
      const accepted = outcomes.filter((outcome) => outcome.accepted).length;
      const completed = outcomes.filter((outcome) => outcome.done).length;
      const latencies = outcomes.filter((outcome) => outcome.done).map((outcome) => outcome.latency);
      const identical = outcomes.filter(
        (outcome, index) => outcome.png && Buffer.from(outcome.png).equals(Buffer.from(reference[index])),
      ).length;
      return {
        model: untrained ? `${options.config} (untrained)` : modelDir,
        untrained,
        requests: options.requests,
        accepted,
        rejected: options.requests - accepted,
        completed,
        lost: accepted - completed,
        latencyP50Seconds: quantile(latencies, 0.5),
        latencyP99Seconds: quantile(latencies, 0.99),
        httpImagesPerSecond: completed / httpSeconds,
        inProcessImagesPerSecond: options.requests / inProcessSeconds,
        identicalImages: identical,
      };
    } finally {
      await server.close();
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

export function formatServerBench(result: ServerBenchResult): string {
  const rows: [string, string][] = [
    ["model", result.model],
    ["requests", String(result.requests)],
    ["accepted", String(result.accepted)],
    ["rejected (429)", String(result.rejected)],
    ["completed", String(result.completed)],
    ["lost", String(result.lost)],
    ["latency p50", `${result.latencyP50Seconds.toFixed(2)} s`],
    ["latency p99", `${result.latencyP99Seconds.toFixed(2)} s`],
    ["images/s over HTTP", result.httpImagesPerSecond.toFixed(2)],
    ["images/s in-process", result.inProcessImagesPerSecond.toFixed(2)],
    ["identical to in-process", `${result.identicalImages} of ${result.completed}`],
  ];
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`).join("\n");
}
