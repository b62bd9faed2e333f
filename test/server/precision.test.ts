/**
 * The `precision` field of generation requests and batches, through real servers on loopback with
 * the real generator (an untrained phantom-tiny saved by the setup):
 * - "f16" runs the f16 pipeline (text encoder and UNet in f16): the served image is the library's
 *   f16 image for its seed, the sidecar and the job say f16, and the generator keeps one pipeline per
 *   (model, precision);
 * - a value other than f32/f16 is a 400 naming `precision`; the OpenAPI document lists the field with
 *   its values and default in both request schemas;
 * - a batch in f16 writes f16 sidecars and an f16 manifest;
 * - `cxr serve --precision f16` (config.defaultPrecision) makes f16 the default;
 * - on an adapter without shader-f16 (the real device with the feature hidden), f16 is a 400 naming
 *   the field and the feature, f32 still runs, and a server whose default is f16 refuses to start.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createPipeline } from "@cxr/diffusion";
import type { Gpu } from "@cxr/kernels";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { DiffusionGenerator, serverGpu } from "../../packages/server/src/diffusion-generator.ts";
import { startModelServer } from "../../packages/server/src/serve.ts";
import { type GeneratorSetup, setupGenerator } from "./generator-setup.ts";
import { startTestServer } from "./helpers.ts";

/** The real device with `shader-f16` hidden. */
function withoutHalf(device: Gpu): Gpu {
  return Object.create(device, {
    features: { value: new Set([...device.features].filter((feature) => feature !== "shader-f16")) },
  });
}

let setup: GeneratorSetup;
let hasHalf = false;
beforeAll(async () => {
  setup = await setupGenerator();
  hasHalf = (await serverGpu()).features.has("shader-f16");
}, 120_000);
afterAll(() => setup?.remove());

const post = async (url: string, body: unknown) => {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as any };
};

async function settle(url: string, id: string): Promise<any> {
  const deadline = Date.now() + 300_000;
  for (;;) {
    const job = (await (await fetch(`${url}/v1/jobs/${id}`)).json()) as any;
    if (!["queued", "running"].includes(job.state) || Date.now() > deadline) return job;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe("precision on a device with shader-f16 (default f32)", () => {
  let s: Awaited<ReturnType<typeof startTestServer>>;
  beforeAll(async () => {
    s = await startTestServer({
      generator: setup.generator,
      dataRoot: setup.dataRoot,
      defaultModel: setup.model,
    });
  }, 120_000);
  afterAll(async () => s?.close());

  test("precision f16: the library's f16 image for the seed, f16 in the job and the sidecar; one pipeline per (model, precision)", async (context) => {
    if (!hasHalf) context.skip();
    const request = {
      prompt: "70 year old female. Cardiomegaly.",
      steps: 3,
      seed: 21,
      sampler: "ddim",
      bitDepth: 16,
    };
    const half = await post(`${s.url}/v1/generations?wait=60`, { ...request, precision: "f16" });
    const full = await post(`${s.url}/v1/generations?wait=60`, request); // the default: f32
    expect([half.status, full.status]).toEqual([200, 200]);
    expect(half.body.params.precision).toBe("f16");
    expect(full.body.params.precision).toBe("f32");
    const served = async (job: any) =>
      Buffer.from(await (await fetch(`${s.url}${job.images[0].url}`)).arrayBuffer());
    const sidecar = async (job: any) =>
      (await (await fetch(`${s.url}${job.images[0].sidecarUrl}`)).json()) as any;
    expect((await sidecar(half.body)).precision).toBe("f16");
    expect((await sidecar(full.body)).precision).toBe("f32");
    const halfPng = await served(half.body);
    const fullPng = await served(full.body);
    expect(halfPng.equals(fullPng)).toBe(false); // the f16 kernels ran
    const pipeline = await createPipeline(join(s.server.config.modelsRoot, setup.model), {
      gpu: await serverGpu(),
      precision: "f16",
    });
    try {
      const expected = await pipeline.generate({ ...request, bits: 16, sampler: "ddim", n: 1 });
      expect(halfPng.equals(expected.images[0].png)).toBe(true);
    } finally {
      pipeline.dispose();
    }
    expect(setup.generator.cached).toEqual(
      expect.arrayContaining([`${setup.model}/f16`, `${setup.model}/f32`]),
    );
  }, 300_000);

  test("a precision other than f32 or f16 is a 400 naming the field; the OpenAPI document lists it", async () => {
    for (const [path, body] of [
      ["/v1/generations", { prompt: "x", precision: "f8" }],
      ["/v1/generations", { prompt: "x", precision: 16 }],
      ["/v1/generation-batches", { name: "p", cells: [{ prompt: "x" }], seeds: [1], precision: "bf16" }],
    ] as const) {
      const { status, body: answer } = await post(`${s.url}${path}`, body);
      expect(status, path).toBe(400);
      expect(answer.error.field, path).toBe("precision");
      expect(answer.error.message, path).toMatch(/^precision: /);
    }
    const document = (await (await fetch(`${s.url}/openapi.json`)).json()) as any;
    for (const schema of ["GenerationRequest", "GenerationBatchRequest"]) {
      const field = document.components.schemas[schema].properties.precision;
      expect(field.enum, schema).toEqual(["f32", "f16"]);
      expect(field.default, schema).toBe("f32");
      expect(field.description, schema).toMatch(/shader-f16/);
    }
  });

  test("a batch in f16 writes f16 sidecars and an f16 manifest", async (context) => {
    if (!hasHalf) context.skip();
    const { status, body } = await post(`${s.url}/v1/generation-batches`, {
      name: "half-grid",
      cells: [
        { prompt: "55 year old BLACK male. Cardiomegaly." },
        { structured: { sex: "female", age: 40, findings: [] } },
      ],
      seeds: [3],
      steps: 2,
      sampler: "ddim",
      precision: "f16",
    });
    expect(status).toBe(202);
    expect((await settle(s.url, body.batch.id)).state).toBe("succeeded");
    const folder = join(s.server.config.datasetsRoot, "half-grid");
    expect(JSON.parse(readFileSync(join(folder, "manifest.json"), "utf8")).precision).toBe("f16");
    for (const patient of ["patient00001", "patient00002"]) {
      const sidecar = JSON.parse(
        readFileSync(join(folder, "train", patient, "study1/view1_frontal.json"), "utf8"),
      );
      expect(sidecar.precision, patient).toBe("f16");
    }
  }, 300_000);
});

describe("the default precision (cxr serve --precision)", () => {
  test("--precision f16: a request that names none runs f16; the document shows the default", async (context) => {
    if (!hasHalf) context.skip();
    const s = await startTestServer({
      generator: setup.generator,
      defaultModel: setup.model,
      modelsRoot: join(setup.dataRoot, "models"),
      defaultPrecision: "f16",
    });
    try {
      const { status, body } = await post(`${s.url}/v1/generations?wait=60`, {
        prompt: "x",
        steps: 2,
        sampler: "ddim",
      });
      expect(status).toBe(200);
      expect(body.params.precision).toBe("f16");
      const sidecar = (await (await fetch(`${s.url}${body.images[0].sidecarUrl}`)).json()) as any;
      expect(sidecar.precision).toBe("f16");
      const document = (await (await fetch(`${s.url}/openapi.json`)).json()) as any;
      expect(document.components.schemas.GenerationRequest.properties.precision.default).toBe("f16");
    } finally {
      await s.close();
    }
  }, 300_000);
});

describe("an adapter without shader-f16 (the real device with the feature hidden)", () => {
  test("f16 is a 400 naming precision and the feature; f32 still runs; a default of f16 refuses to start", async () => {
    const modelsRoot = join(setup.dataRoot, "models");
    const gpu = async () => withoutHalf(await serverGpu());
    const generator = new DiffusionGenerator({ modelsRoot, gpu });
    const s = await startTestServer({ generator, defaultModel: setup.model, modelsRoot });
    try {
      for (const [path, body] of [
        ["/v1/generations", { prompt: "x", steps: 2, precision: "f16" }],
        [
          "/v1/generation-batches",
          { name: "nohalf", cells: [{ prompt: "x" }], seeds: [1], precision: "f16" },
        ],
      ] as const) {
        const { status, body: answer } = await post(`${s.url}${path}`, body);
        expect(status, path).toBe(400);
        expect(answer.error).toMatchObject({ code: "unsupported_precision", field: "precision" });
        expect(answer.error.message).toMatch(
          /^precision: "f16" needs the adapter feature 'shader-f16', which .+ lacks; use "f32"$/,
        );
      }
      expect(generator.cached).toEqual([]); // nothing was loaded for the refused requests
      const { status, body } = await post(`${s.url}/v1/generations?wait=60`, {
        prompt: "x",
        steps: 2,
        sampler: "ddim",
      });
      expect(status).toBe(200);
      expect(body.state).toBe("succeeded");
      expect(body.params.precision).toBe("f32");
    } finally {
      await s.close();
    }
    await expect(
      startModelServer({
        dataRoot: join(setup.dataRoot, "refused"),
        modelsRoot,
        port: 0,
        gpu,
        defaultPrecision: "f16",
        log: () => {},
      }),
    ).rejects.toThrow(/--precision f16: "f16" needs the adapter feature 'shader-f16'/);
  }, 300_000);
});
