/**
 * The generation endpoints on the real generator (DiffusionGenerator on an untrained phantom-tiny
 * saved by the setup): structured and text prompts, every sampler, 8 and 16 bits, images identical
 * to the library's own output for the recorded seed, sidecars, the profile table and readiness.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadDataset } from "@cxr/data";
import {
  createPipeline,
  GENERATE_DEFAULTS,
  promptFromFields,
  SAMPLER_KINDS,
  TIMESTEP_SPACINGS,
} from "@cxr/diffusion";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { SHARD_KIND } from "../../packages/server/src/batch.ts";
import { serverGpu } from "../../packages/server/src/diffusion-generator.ts";
import {
  FALLBACK_SAMPLING,
  SAMPLERS,
  SAMPLING_FIELD_DEFAULTS,
  SPACINGS,
} from "../../packages/server/src/generation.ts";
import { type GeneratorSetup, saveTinyModel, setupGenerator } from "./generator-setup.ts";
import { startTestServer } from "./helpers.ts";

let setup: GeneratorSetup;
let s: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  setup = await setupGenerator();
  await setup.generator.load(setup.model);
  s = await startTestServer({
    generator: setup.generator,
    dataRoot: setup.dataRoot,
    defaultModel: setup.model,
    readiness: () => ({
      adapter: setup.generator.gpu?.adapter.description ?? null,
      model: setup.generator.loadedModel,
    }),
  });
}, 120_000);
afterAll(async () => {
  await s?.close();
  setup?.remove();
});

async function generate(body: Record<string, unknown>) {
  const response = await fetch(`${s.url}/v1/generations?wait=120`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, job: (await response.json()) as any };
}

/** POSTs a generation that must be refused with 400; returns the field the error names. */
async function refusedField(body: Record<string, unknown>): Promise<string> {
  const response = await fetch(`${s.url}/v1/generations`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(response.status).toBe(400);
  return ((await response.json()) as any).error.field;
}

const bytes = async (url: string) => Buffer.from(await (await fetch(`${s.url}${url}`)).arrayBuffer());

describe("generation on the real generator", () => {
  test("a cancel mid-image returns every GPU buffer of the job to the pool (pndm and dpmpp-2m keep history)", async () => {
    const gpu = setup.generator.gpu!;
    const getJob = async (id: string) => (await (await fetch(`${s.url}/v1/jobs/${id}`)).json()) as any;
    // A first generation lets the model build what it caches for good (e.g. constant tables).
    expect((await generate({ prompt: "warm up", steps: 2 })).job.state).toBe("succeeded");
    for (const sampler of ["pndm", "dpmpp-2m"]) {
      const before = gpu.pool.snapshot().inUseBytes;
      const response = await fetch(`${s.url}/v1/generations`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: "70 year old female. Cardiomegaly.", n: 2, steps: 200, sampler }),
      });
      const { id } = (await response.json()) as any;
      for (let tries = 0; !((await getJob(id)).progress?.step >= 3); tries++) {
        expect(tries).toBeLessThan(3000);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(gpu.pool.snapshot().inUseBytes).toBeGreaterThan(before);
      expect((await fetch(`${s.url}/v1/jobs/${id}`, { method: "DELETE" })).status).toBe(202);
      for (let tries = 0; (await getJob(id)).state !== "cancelled"; tries++) {
        expect(tries).toBeLessThan(3000);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect((await getJob(id)).images.length).toBe(0);
      expect(gpu.pool.snapshot().inUseBytes, sampler).toBe(before);
    }
    // The library alone: a finished generation, and one whose onStep throws, leave nothing in use
    // (the text encoder's activations were once left behind by every generation).
    const pipeline = await setup.generator.load(setup.model);
    const before = gpu.pool.snapshot().inUseBytes;
    await pipeline.generate({ prompt: "55 year old male.", steps: 3, sampler: "ddim" });
    expect(gpu.pool.snapshot().inUseBytes).toBe(before);
    await expect(
      pipeline.generate({
        prompt: "55 year old male.",
        steps: 10,
        sampler: "pndm",
        onStep: ({ step }) => {
          if (step === 4) throw new Error("stop here");
        },
      }),
    ).rejects.toThrow("stop here");
    expect(gpu.pool.snapshot().inUseBytes).toBe(before);
  });

  test("structured prompt: images equal the library's for each recorded seed; sidecars reproduce them", async () => {
    const structured = { sex: "female", age: 70, race: "WHITE", findings: ["Cardiomegaly"] } as const;
    const { status, job } = await generate({
      structured,
      n: 2,
      steps: 3,
      seed: 9,
      sampler: "ddim",
      spacing: "trailing",
      guidance: 2,
      guidanceRescale: 0.5,
      negativePrompt: "{patient} No acute cardiopulmonary abnormality.",
      negativeGuidance: 2,
    });
    expect(status).toBe(200);
    expect(job.state).toBe("succeeded");
    expect(job.images.map((image: any) => image.seed)).toEqual([9, 10]);
    const pipeline = await createPipeline(`${s.server.config.modelsRoot}/tiny`, { gpu: await serverGpu() });
    try {
      for (const image of job.images) {
        const served = await bytes(image.url);
        const meta = await sharp(served).metadata();
        expect([meta.width, meta.height, meta.depth]).toEqual([setup.size, setup.size, "uchar"]);
        const expected = await pipeline.generate({
          prompt: promptFromFields(structured),
          n: 1,
          steps: 3,
          seed: image.seed,
          sampler: "ddim",
          spacing: "trailing",
          guidance: 2,
          guidanceRescale: 0.5,
          negativePrompt: "70 year old WHITE female. No acute cardiopulmonary abnormality.",
          negativeGuidance: 2,
        });
        expect(served.equals(expected.images[0].png)).toBe(true);
        const sidecar = (await (await fetch(`${s.url}${image.sidecarUrl}`)).json()) as any;
        expect(sidecar).toMatchObject({
          prompt: promptFromFields(structured),
          seed: image.seed,
          sampler: "ddim",
          spacing: "trailing",
          steps: 3,
          guidance: 2,
          guidanceRescale: 0.5,
          negativePrompt: "70 year old WHITE female. No acute cardiopulmonary abnormality.",
          negativeGuidance: 2,
          bits: 8,
          job: job.id,
          index: image.index,
          modelName: "tiny",
        });
        expect(sidecar.model.weightsSha256).toMatch(/^[0-9a-f]{64}$/);
      }
    } finally {
      pipeline.dispose();
    }
  });

  test.each(["ddpm", "pndm", "dpmpp-2m"])("sampler %s, 16-bit, text prompt", async (sampler) => {
    const { job } = await generate({
      prompt: "40 year old male. No acute cardiopulmonary abnormality.",
      steps: 2,
      sampler,
      bitDepth: 16,
      seed: 3,
    });
    expect(job.state).toBe("succeeded");
    const meta = await sharp(await bytes(job.images[0].url)).metadata();
    expect(meta.depth).toBe("ushort");
  });

  test("the server's sampler and spacing names are the diffusion package's; an unknown spacing, a rescale outside [0, 1] or an unwritable negative prompt is refused", async () => {
    expect(SAMPLERS).toEqual(SAMPLER_KINDS);
    expect(SPACINGS).toEqual(TIMESTEP_SPACINGS);
    expect(await refusedField({ prompt: "x", spacing: "uniform" })).toBe("spacing");
    expect(await refusedField({ prompt: "x", guidanceRescale: 1.5 })).toBe("guidanceRescale");
    // {patient} needs a prompt that names one: refused at submission, not failed in the job.
    expect(await refusedField({ prompt: "an enlarged heart", negativePrompt: "{patient}" })).toBe(
      "negativePrompt",
    );
    expect(await refusedField({ prompt: "x", negativePrompt: 7 })).toBe("negativePrompt");
    expect(await refusedField({ prompt: "x", negativeGuidance: -1 })).toBe("negativeGuidance");
    expect(await refusedField({ prompt: "x", negativeGuidance: "2" })).toBe("negativeGuidance");
  });

  test("a request without sampler or steps takes the model's own (config.json sampling), else PNDM 50", async () => {
    const dir = await saveTinyModel(s.server.config.modelsRoot, "tiny-ddim");
    const configPath = join(dir, "config.json");
    const config = JSON.parse(readFileSync(configPath, "utf8"));
    writeFileSync(configPath, JSON.stringify({ ...config, sampling: { sampler: "ddim", steps: 3 } }));
    const prompt = "55 year old male.";
    const { job } = await generate({ model: "tiny-ddim", prompt, seed: 5 });
    expect(job.state).toBe("succeeded");
    expect(job.params).toMatchObject({ sampler: "ddim", steps: 3 });
    const pipeline = await createPipeline(dir, { gpu: await serverGpu() });
    try {
      expect(pipeline.defaults).toMatchObject({ sampler: "ddim", steps: 3 });
      const expected = await pipeline.generate({ prompt, seed: 5 });
      expect(expected.images[0].metadata).toMatchObject({ sampler: "ddim", steps: 3 });
      expect((await bytes(job.images[0].url)).equals(expected.images[0].png)).toBe(true);
    } finally {
      pipeline.dispose();
    }
    // Named in the request, they win; a batch takes the model's too.
    const named = await generate({ model: "tiny-ddim", prompt, seed: 5, sampler: "ddpm", steps: 2 });
    expect(named.job.params).toMatchObject({ sampler: "ddpm", steps: 2 });
    const response = await fetch(`${s.url}/v1/generation-batches`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: "own-sampling", model: "tiny-ddim", cells: [{ prompt }], seeds: [5] }),
    });
    expect(response.status).toBe(202);
    const batch = (await response.json()) as any;
    const shard = s.server.store.get(batch.shards[0])!;
    expect(shard.params).toMatchObject({ sampler: "ddim", steps: 3 });
    // Its steps obey the server's limit like a request's.
    const limit = s.server.config.limits.maxSteps;
    writeFileSync(configPath, JSON.stringify({ ...config, sampling: { sampler: "ddim", steps: limit + 1 } }));
    expect(await refusedField({ model: "tiny-ddim", prompt })).toBe("steps");
    // A config.json the model cannot load with is refused at submission, naming the key, not queued to fail.
    writeFileSync(configPath, JSON.stringify({ ...config, sampling: { sampler: "euler", steps: 3 } }));
    for (const [path, body] of [
      ["/v1/generations", { model: "tiny-ddim", prompt, sampler: "ddim" }],
      [
        "/v1/generation-batches",
        { name: "bad-sampling", model: "tiny-ddim", cells: [{ prompt }], seeds: [5] },
      ],
    ] as const) {
      const refused = await fetch(`${s.url}${path}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      expect(refused.status).toBe(400);
      const { error } = (await refused.json()) as any;
      expect(error).toMatchObject({ code: "invalid_model", field: "model" });
      expect(error.message).toContain("sampling.sampler must be one of");
      expect(error.message).toContain('"euler"');
    }
    writeFileSync(configPath, "{ not json");
    expect(await refusedField({ model: "tiny-ddim", prompt })).toBe("model");
    writeFileSync(configPath, JSON.stringify({ ...config, sampling: { sampler: "ddim", steps: 3 } }));
    // The setup's model names none: the fallback, the diffusion package's GENERATE_DEFAULTS.
    expect(FALLBACK_SAMPLING).toEqual({ sampler: GENERATE_DEFAULTS.sampler, steps: GENERATE_DEFAULTS.steps });
    // What a stored job lacking the later fields is run with: the library's own defaults, and f32.
    expect(SAMPLING_FIELD_DEFAULTS).toEqual({
      spacing: GENERATE_DEFAULTS.spacing,
      guidanceRescale: GENERATE_DEFAULTS.guidanceRescale,
      negativePrompt: GENERATE_DEFAULTS.negativePrompt,
      negativeGuidance: GENERATE_DEFAULTS.negativeGuidance,
      precision: "f32",
    });
    const fallback = await generate({ prompt, seed: 5 });
    expect(fallback.job.params).toMatchObject(FALLBACK_SAMPLING);
  });

  test("a size the model does not make is refused naming size; readiness and the profile table", async () => {
    expect(await refusedField({ prompt: "x", size: 32 })).toBe("size");
    const ready = (await (await fetch(`${s.url}/readyz`)).json()) as any;
    expect(ready).toMatchObject({ ready: true, model: "tiny" });
    expect(ready.adapter).toBeTruthy();
    const profile = (await (await fetch(`${s.url}/v1/profile`)).json()) as any;
    expect(profile.jobs.length).toBeGreaterThan(0);
    const names = profile.kernels.map((row: any) => row.name);
    expect(names.length).toBeGreaterThan(3);
    expect(profile.kernels.every((row: any) => row.calls > 0)).toBe(true);
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`cxr_kernel_calls_total\\{kernel="${names[0]}"`));
  });
});

describe("generation batches on the real generator", () => {
  test("a grid of cells x seeds becomes a CheXpert-layout dataset with a manifest, in shards", async () => {
    const request = {
      name: "grid",
      cells: [
        { structured: { sex: "female", age: 70, race: "WHITE", findings: ["Cardiomegaly"] } },
        { structured: { sex: "male", age: 40, findings: [] } },
        { prompt: "55 year old BLACK male. Cardiomegaly." },
      ],
      seeds: [1, 2],
      steps: 2,
      sampler: "ddim",
      spacing: "linspace",
      negativePrompt: "{patient}",
      negativeGuidance: 1.5,
      shardSize: 4,
    };
    const response = await fetch(`${s.url}/v1/generation-batches`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
    expect(response.status).toBe(202);
    const { batch, shards } = (await response.json()) as any;
    expect(shards).toHaveLength(2);
    const deadline = Date.now() + 120_000;
    let settled: any;
    for (;;) {
      settled = (await (await fetch(`${s.url}/v1/jobs/${batch.id}`)).json()) as any;
      if (settled.state !== "running" || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(settled.state).toBe("succeeded");
    expect(settled.result).toMatchObject({ dataset: "grid", images: 6, shards: 2 });
    const root = s.server.config.datasetsRoot;
    const loaded = loadDataset("chexpert", join(root, "grid"));
    expect(loaded.issues).toEqual([]);
    expect(loaded.records).toHaveLength(6);
    const first = loaded.records[0];
    expect([first.sex, first.age, first.race, first.labels.Cardiomegaly]).toEqual(["female", 70, "WHITE", 1]);
    expect(loaded.records[2].labels["No Finding"]).toBe(1);
    expect(loaded.records[4].race).toBe("BLACK");
    const manifest = JSON.parse(readFileSync(join(root, "grid", "manifest.json"), "utf8"));
    expect(manifest).toMatchObject({
      format: "cxr-generation-batch/1",
      images: 6,
      seeds: [1, 2],
      model: "tiny",
      spacing: "linspace",
      negativePrompt: "{patient}",
      negativeGuidance: 1.5,
    });
    expect(manifest.shards.map((shard: any) => shard.id)).toEqual(shards);
    // Each image is the library's image for its cell's prompt and seed.
    const sidecar = JSON.parse(
      readFileSync(join(root, "grid/train/patient00003/study2/view1_frontal.json"), "utf8"),
    );
    expect(sidecar).toMatchObject({
      prompt: "55 year old BLACK male. Cardiomegaly.",
      seed: 2,
      spacing: "linspace",
      negativePrompt: "55 year old BLACK male.",
      negativeGuidance: 1.5,
      batch: batch.id,
    });
    const datasets = (await (await fetch(`${s.url}/v1/datasets`)).json()) as any;
    expect(datasets.datasets.map((entry: any) => entry.name)).toContain("grid");

    // A shard run again (a retried shard) skips what is on disk and makes nothing twice.
    const shardJob = s.server.store.get(shards[0])!;
    const [again] = s.server.queue.submit([{ kind: SHARD_KIND, priority: 10, params: shardJob.params }]);
    const deadline2 = Date.now() + 60_000;
    let rerun = s.server.store.get(again.id)!;
    while (rerun.state !== "succeeded" && rerun.state !== "failed" && Date.now() < deadline2) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      rerun = s.server.store.get(again.id)!;
    }
    expect(rerun.result).toEqual({ made: 0, skipped: 4, items: 4 });

    const twice = await fetch(`${s.url}/v1/generation-batches`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
    expect(twice.status).toBe(409);
    expect(((await twice.json()) as any).error.field).toBe("name");
    const tooMany = await fetch(`${s.url}/v1/generation-batches`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...request, name: "big", seeds: Array.from({ length: 10_000 }, (_, i) => i) }),
    });
    expect(tooMany.status).toBe(400);
    expect(((await tooMany.json()) as any).error.field).toBe("seeds");
    const offTemplate = await fetch(`${s.url}/v1/generation-batches`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        ...request,
        name: "off",
        cells: [...request.cells, { prompt: "an enlarged heart" }],
      }),
    });
    expect(offTemplate.status).toBe(400);
    const refusal = ((await offTemplate.json()) as any).error;
    expect(refusal.field).toBe("negativePrompt");
    expect(refusal.message).toContain('cells[3]: negative prompt "{patient}": {patient} needs a prompt');
  });
});
