/**
 * The generation endpoints on the real generator (DiffusionGenerator on an untrained phantom-tiny
 * saved by the setup): structured and text prompts, every sampler, 8 and 16 bits, images identical
 * to the library's own output for the recorded seed, sidecars, the profile table and readiness.
 */
import { createPipeline, promptFromFields } from "@cxr/diffusion";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { serverGpu } from "../../packages/server/src/diffusion-generator.ts";
import { type GeneratorSetup, setupGenerator } from "./generator-setup.ts";
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

const bytes = async (url: string) => Buffer.from(await (await fetch(`${s.url}${url}`)).arrayBuffer());

describe("generation on the real generator", () => {
  test("structured prompt: images equal the library's for each recorded seed; sidecars reproduce them", async () => {
    const structured = { sex: "female", age: 70, race: "WHITE", findings: ["Cardiomegaly"] } as const;
    const { status, job } = await generate({
      structured,
      n: 2,
      steps: 3,
      seed: 9,
      sampler: "ddim",
      guidance: 2,
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
          guidance: 2,
        });
        expect(served.equals(expected.images[0].png)).toBe(true);
        const sidecar = (await (await fetch(`${s.url}${image.sidecarUrl}`)).json()) as any;
        expect(sidecar).toMatchObject({
          prompt: promptFromFields(structured),
          seed: image.seed,
          sampler: "ddim",
          steps: 3,
          guidance: 2,
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

  test("a size the model does not make is refused naming size; readiness and the profile table", async () => {
    const refused = await fetch(`${s.url}/v1/generations`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt: "x", size: 32 }),
    });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as any).error.field).toBe("size");
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
