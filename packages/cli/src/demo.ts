/**
 * `cxr demo`: the generator through the HTTP API, as a service would call it. Starts the server on
 * the shipped model (loopback, a free port), submits one generation job per cell of a grid over
 * sex x age x race x findings, follows the jobs to completion, downloads each PNG over HTTP, writes
 * them as one contact sheet, stops the server, and prints how to open the web page.
 */
import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { type ContactSheetRow, contactSheetPng } from "@cxr/diffusion";
import { startModelServer, TERMINAL_STATES } from "@cxr/server";
import type { Command } from "commander";
import sharp from "sharp";
import { SHIPPED_GENERATOR } from "./quickstart.ts";

export interface DemoOptions {
  out: string;
  /** The models root served (the shipped model's folder is one model under it). */
  models: string;
  /** Steps per image (absent: the model's own, from its config.json "sampling"; the sampler is always its own). */
  steps?: number;
  seed: number;
}

const DEFAULTS: DemoOptions = {
  out: "runs/demo",
  models: dirname(SHIPPED_GENERATOR),
  seed: 11,
};

const SEXES = ["female", "male"] as const;
const AGES = [35, 70] as const;
const RACES = ["WHITE", "BLACK"] as const;
const FINDINGS: readonly (readonly string[])[] = [[], ["Cardiomegaly"], ["Pleural Effusion"]];

interface JobView {
  id: string;
  state: string;
  error: { message: string } | null;
  images: { id: string; url: string }[];
  params: { sampler: string; steps: number };
}

export interface DemoResult {
  contactSheet: string;
  images: number;
  seconds: number;
}

async function call<T>(url: string, init?: RequestInit): Promise<T> {
  const response = await fetch(url, init);
  if (!response.ok)
    throw new Error(
      `demo: ${init?.method ?? "GET"} ${url} answered ${response.status}: ${await response.text()}`,
    );
  return (await response.json()) as T;
}

async function pixelsOf(url: string): Promise<{ pixels: Float32Array; size: number }> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`demo: GET ${url} answered ${response.status}`);
  const { data, info } = await sharp(Buffer.from(await response.arrayBuffer()))
    .toColourspace("b-w")
    .raw()
    .toBuffer({ resolveWithObject: true });
  const pixels = new Float32Array(info.width * info.height);
  for (let index = 0; index < pixels.length; index++) pixels[index] = data[index * info.channels] / 255;
  return { pixels, size: info.width };
}

export async function demo(
  overrides: Partial<DemoOptions> = {},
  log: (message: string) => void = console.log,
): Promise<DemoResult> {
  const options = { ...DEFAULTS, ...overrides };
  if (
    options.steps !== undefined &&
    !(Number.isInteger(options.steps) && options.steps >= 1 && options.steps <= 1000)
  )
    throw new Error(`demo: --steps must be an integer from 1 to 1000, got ${options.steps}`);
  const started = performance.now();
  const out = resolve(options.out);
  mkdirSync(out, { recursive: true });
  const server = await startModelServer({
    dataRoot: join(out, "server"),
    modelsRoot: resolve(options.models),
    port: 0,
    log: () => {},
  });
  try {
    const model = server.generator.loadedModel;
    if (!model) throw new Error(`demo: no generator model under ${options.models}`);
    log(`server on ${server.url} with model "${model}"`);
    const rows: { label: string; jobs: string[] }[] = [];
    for (const sex of SEXES)
      for (const age of AGES)
        for (const race of RACES) {
          const jobs: string[] = [];
          for (const findings of FINDINGS) {
            const job = await call<JobView>(`${server.url}/v1/generations`, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({
                structured: { sex, age, race, findings },
                n: 1,
                ...(options.steps !== undefined ? { steps: options.steps } : {}),
                guidance: 3,
                seed: options.seed,
              }),
            });
            jobs.push(job.id);
          }
          rows.push({ label: `${age} year old ${race} ${sex}: none | cardiomegaly | effusion`, jobs });
        }
    const total = rows.length * FINDINGS.length;
    const { sampler, steps } = (await call<JobView>(`${server.url}/v1/jobs/${rows[0].jobs[0]}`)).params;
    log(
      `submitted ${total} generation jobs (POST /v1/generations), ${steps} ${sampler} steps each (the model's sampler)`,
    );
    const sheetRows: ContactSheetRow[] = [];
    let done = 0;
    for (const row of rows) {
      const images = [];
      for (const id of row.jobs) {
        let job = await call<JobView>(`${server.url}/v1/jobs/${id}`);
        while (!TERMINAL_STATES.has(job.state as never)) {
          await new Promise((wake) => setTimeout(wake, 200));
          job = await call<JobView>(`${server.url}/v1/jobs/${id}`);
        }
        if (job.state !== "succeeded")
          throw new Error(`demo: job ${id} ${job.state}: ${job.error?.message ?? ""}`);
        images.push(await pixelsOf(`${server.url}${job.images[0].url}`));
        done++;
      }
      log(`  ${done}/${total} images`);
      sheetRows.push({ label: row.label, images });
    }
    const contactSheet = join(out, "http-grid.png");
    await sharp(await contactSheetPng(sheetRows)).toFile(contactSheet);
    const seconds = (performance.now() - started) / 1000;
    log(`contact sheet of ${total} images fetched over HTTP -> ${contactSheet} (${seconds.toFixed(0)} s)`);
    log(
      `open the web page: bun packages/cli/src/main.ts serve --models ${options.models}, then http://127.0.0.1:8787/ (API reference at /docs)`,
    );
    return { contactSheet, images: total, seconds };
  } finally {
    await server.close();
  }
}

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description(
      "start the server on the shipped generator, generate a sex x age x race x findings grid through the HTTP API, write a contact sheet",
    )
    .option("--out <dir>", "output folder", DEFAULTS.out)
    .option("--models <dir>", "models root to serve", DEFAULTS.models)
    .option(
      "--steps <n>",
      "steps per image (default: the model's own; its sampler is always used)",
      (value: string) => Number(value),
    )
    .option("--seed <n>", "seed of every image", (value: string) => Number(value), DEFAULTS.seed)
    .action(async (options: DemoOptions) => {
      await demo(options);
    });
}
