/**
 * The API through a real server on loopback: every route, every validation error, limits, auth
 * on and off, path escapes, SSE order, cancellation, training yielding to generation.
 * Jobs here run on StepGenerator/StepTrainer (see helpers.ts: timing-controlled stand-ins calling
 * the same per-step hooks); generation.test.ts runs the same endpoints on the real generator.
 */
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { formatPredictionsCsv, synthesizePredictions } from "@cxr/classifier";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { BATCH_KIND, type BatchParams, planShards, SHARD_KIND } from "../../packages/server/src/batch.ts";
import {
  postJson,
  readEvents,
  StepGenerator,
  StepTrainer,
  startTestServer,
  temporaryRoot,
  waitUntil,
} from "./helpers.ts";

type TestServer = Awaited<ReturnType<typeof startTestServer>>;

const MODELS = { tiny: { name: "tiny", kind: "diffusion" as const, size: 16, defaultSteps: 4 } };

const post = postJson;
const waitFor = <T>(probe: () => Promise<T | undefined>, timeoutMs = 20_000) =>
  waitUntil(probe, { timeoutMs, everyMs: 20 });

async function job(url: string, id: string, headers: Record<string, string> = {}) {
  return (await (await fetch(`${url}/v1/jobs/${id}`, { headers })).json()) as any;
}

describe("server without tokens", () => {
  let s: TestServer;
  const generator = new StepGenerator(MODELS, 2);
  const trainer = new StepTrainer(15);
  beforeAll(async () => {
    s = await startTestServer({
      generator,
      runners: [trainer],
      readiness: () => ({ adapter: "test adapter", model: "tiny" }),
    });
    mkdirSync(join(s.server.config.modelsRoot, "tiny"), { recursive: true });
  });
  afterAll(async () => s.close());

  test("binds loopback by default and answers health, readiness and metrics", async () => {
    expect(s.server.host).toBe("127.0.0.1");
    expect(await (await fetch(`${s.url}/healthz`)).json()).toEqual({ status: "ok" });
    const ready = await fetch(`${s.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, adapter: "test adapter", model: "tiny" });
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    expect(metrics).toContain("# TYPE cxr_queue_depth gauge");
    expect(metrics).toMatch(/cxr_jobs\{state="queued"\} \d+/);
    expect(metrics).toContain("cxr_images_generated_total");
  });

  test("OpenAPI document comes from the validating schemas; reference page and web page are served", async () => {
    const doc = (await (await fetch(`${s.url}/openapi.json`)).json()) as any;
    expect(doc.openapi).toBe("3.1.0");
    for (const path of [
      "/v1/generations",
      "/v1/jobs",
      "/v1/jobs/{id}",
      "/v1/jobs/{id}/events",
      "/v1/images/{id}",
      "/v1/trainings",
      "/v1/evaluations/{id}",
    ]) {
      expect(doc.paths[path], path).toBeDefined();
    }
    const request = doc.components.schemas.GenerationRequest;
    expect(request.properties.n.maximum).toBe(s.server.config.limits.maxImagesPerRequest);
    expect(request.properties.steps.maximum).toBe(s.server.config.limits.maxSteps);
    expect(request.properties.sampler.enum).toEqual(["ddpm", "ddim", "pndm", "dpmpp-2m"]);
    const docs = await fetch(`${s.url}/docs`);
    expect(docs.headers.get("content-type")).toContain("text/html");
    expect(await docs.text()).toContain("/openapi.json");
    const page = await (await fetch(`${s.url}/`)).text();
    expect(page).toContain('id="generate"');
    expect(page).toContain("Cardiomegaly");
    for (const id of ["train", "batch", "evaluation", "followed"]) expect(page).toContain(`id="${id}"`);
    // The page's script parses (a syntax error would leave every form dead in the browser).
    const script = page.slice(page.indexOf("<script>") + "<script>".length, page.lastIndexOf("</script>"));
    expect(() => new Function(script)).not.toThrow();
  });

  test.each([
    [{ prompt: "x", n: 17 }, "n"],
    [{ prompt: "x", n: 0 }, "n"],
    [{ prompt: "x", n: 1.5 }, "n"],
    [{ prompt: "x", steps: 251 }, "steps"],
    [{ prompt: "x", steps: "10" }, "steps"],
    [{ prompt: "x", size: 4096 }, "size"],
    [{ prompt: "x", size: 32 }, "size"],
    [{ prompt: "x", sampler: "euler" }, "sampler"],
    [{ prompt: "x", bitDepth: 12 }, "bitDepth"],
    [{ prompt: "x", guidance: -1 }, "guidance"],
    [{ prompt: "x", seed: -4 }, "seed"],
    [{ prompt: "x".repeat(1001) }, "prompt"],
    [{ n: 1 }, "prompt"],
    [{ prompt: "x", structured: { sex: "female", age: 40, findings: [] } }, "prompt"],
    [{ structured: { sex: "other", age: 40, findings: [] } }, "structured.sex"],
    [{ structured: { sex: "male", age: 140, findings: [] } }, "structured.age"],
    [{ structured: { sex: "male", age: 40, race: "MARTIAN", findings: [] } }, "structured.race"],
    [{ structured: { sex: "male", age: 40, findings: ["Broken Heart"] } }, "structured.findings.0"],
    [{ prompt: "x", colour: "red" }, "colour"],
    [{ prompt: "x", model: "nope" }, "model"],
    [{ prompt: "x", model: "../etc" }, "model"],
    [{ prompt: "x", model: "/etc/passwd" }, "model"],
    [{ prompt: "x", model: "a\u0000b" }, "model"],
    [{ prompt: "x", model: "a/b" }, "model"],
  ])("400 naming the field: %j -> %s", async (body, field) => {
    const { response, body: answer } = await post(`${s.url}/v1/generations`, body);
    expect(response.status).toBe(400);
    expect(answer.error.field).toBe(field);
    expect(answer.error.message).toContain(field.split(".")[0]);
  });

  test("malformed JSON, oversized bodies, bad ids and bad query values are refused without a stack", async () => {
    const malformed = await post(`${s.url}/v1/generations`, "{not json");
    expect(malformed.response.status).toBe(400);
    expect(malformed.body.error.code).toBe("invalid_json");
    const huge = await post(`${s.url}/v1/generations`, { prompt: "x".repeat(70_000) });
    expect(huge.response.status).toBe(413);
    expect(huge.body.error.code).toBe("body_too_large");
    const wait = await post(`${s.url}/v1/generations?wait=99999`, { prompt: "x" });
    expect(wait.response.status).toBe(400);
    expect(wait.body.error.field).toBe("wait");
    for (const path of ["/v1/jobs/..%2F..%2Fetc", "/v1/images/..%2Fjobs.sqlite", "/v1/jobs/job_zz"]) {
      const response = await fetch(`${s.url}${path}`);
      expect(response.status, path).toBe(400);
      expect(((await response.json()) as any).error.field).toBe("id");
    }
    const missing = await fetch(`${s.url}/v1/jobs/job_00000000000000000000`);
    expect(missing.status).toBe(404);
    const list = await fetch(`${s.url}/v1/jobs?limit=0`);
    expect(list.status).toBe(400);
    expect(((await list.json()) as any).error.field).toBe("limit");
    const nowhere = await fetch(`${s.url}/v1/nothing`);
    expect(nowhere.status).toBe(404);
    expect(await nowhere.text()).not.toMatch(/\bat .*\.ts:\d+/);
  });

  test("a generation: 202, SSE in order, images and sidecars, listed, counted", async () => {
    const { response, body } = await post(`${s.url}/v1/generations`, {
      structured: { sex: "female", age: 61, race: "ASIAN", findings: ["Cardiomegaly", "Edema"] },
      n: 2,
      steps: 5,
      seed: 7,
      sampler: "ddim",
    });
    expect(response.status).toBe(202);
    expect(response.headers.get("location")).toBe(`/v1/jobs/${body.id}`);
    expect(body.state).toBe("queued");
    const events = await readEvents(`${s.url}${body.links.events}`);
    const types = events.map((event) => event.type);
    expect(types[0]).toBe("queued");
    expect(types.at(-1)).toBe("done");
    expect(types.filter((type) => type === "started")).toHaveLength(1);
    const steps = events
      .filter((event) => event.type === "progress")
      .map((event) => event.data.step as number);
    expect(steps.length).toBeGreaterThan(0);
    expect(steps).toEqual([...steps].sort((a, b) => a - b));
    expect(new Set(steps).size).toBe(steps.length);
    expect(steps.at(-1)).toBe(10);
    const lastProgress = events.filter((event) => event.type === "progress").at(-1)!.data;
    expect(lastProgress.total).toBe(10);
    expect(lastProgress.etaSeconds).toBe(0);
    const finished = await job(s.url, body.id);
    expect(finished.state).toBe("succeeded");
    expect(finished.images.map((image: any) => image.seed)).toEqual([7, 8]);
    const png = await fetch(`${s.url}${finished.images[1].url}`);
    expect(png.headers.get("content-type")).toBe("image/png");
    const meta = await sharp(Buffer.from(await png.arrayBuffer())).metadata();
    expect([meta.width, meta.height]).toEqual([16, 16]);
    const sidecar = (await (await fetch(`${s.url}${finished.images[1].sidecarUrl}`)).json()) as any;
    expect(sidecar).toMatchObject({ job: body.id, index: 1, seed: 8, width: 16 });
    expect(generator.calls.at(-1)).toMatchObject({ sampler: "ddim", seed: 8, steps: 5, bitDepth: 8 });
    expect(generator.calls.at(-1)!.structured).toEqual({
      sex: "female",
      age: 61,
      race: "ASIAN",
      findings: ["Cardiomegaly", "Edema"],
    });
    const listed = (await (await fetch(`${s.url}/v1/jobs?kind=generation&state=succeeded`)).json()) as any;
    expect(listed.jobs.map((entry: any) => entry.id)).toContain(body.id);
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    expect(Number(/cxr_images_generated_total (\d+)/.exec(metrics)![1])).toBeGreaterThanOrEqual(2);
    expect(metrics).toMatch(/cxr_kernel_seconds_total\{kernel="test-kernel",variant="cpu"\} [0-9.]+/);
    const profile = (await (await fetch(`${s.url}/v1/profile`)).json()) as any;
    expect(profile.jobs).toContain(body.id);
    expect(profile.kernels[0]).toMatchObject({ name: "test-kernel", variant: "cpu" });
    expect(profile.kernels[0].calls).toBe(3 * profile.jobs.length);
  });

  test("?wait= answers 200 with the images of a small job; a late SSE subscriber gets the whole story", async () => {
    const { response, body } = await post(`${s.url}/v1/generations?wait=30`, {
      prompt: "70 year old male.",
      steps: 3,
    });
    expect(response.status).toBe(200);
    expect(body.state).toBe("succeeded");
    expect(body.images).toHaveLength(1);
    const events = await readEvents(`${s.url}${body.links.events}`);
    expect(events.map((event) => event.type)).toEqual(["queued", "started", "done"]);
    expect(events[2].data.result).toMatchObject({ images: [{ id: body.images[0].id }] });
  });

  test("cancellation: a queued job at once, a running one at its next step; twice is a 409", async () => {
    const long = await post(`${s.url}/v1/generations`, { prompt: "long", steps: 250, n: 4 });
    const queued = await post(`${s.url}/v1/generations`, { prompt: "queued", steps: 5 });
    await waitFor(async () => ((await job(s.url, long.body.id)).progress?.step > 2 ? true : undefined));
    const cancelQueued = await fetch(`${s.url}/v1/jobs/${queued.body.id}`, { method: "DELETE" });
    expect(cancelQueued.status).toBe(202);
    expect(((await cancelQueued.json()) as any).state).toBe("cancelled");
    const eventsPromise = readEvents(`${s.url}${long.body.links.events}`);
    const cancel = await fetch(`${s.url}/v1/jobs/${long.body.id}`, { method: "DELETE" });
    expect(cancel.status).toBe(202);
    const events = await eventsPromise;
    expect(events.at(-1)!.type).toBe("cancelled");
    const cancelled = await job(s.url, long.body.id);
    expect(cancelled.state).toBe("cancelled");
    expect(cancelled.progress.step).toBeLessThan(100);
    expect(cancelled.images).toHaveLength(0);
    const again = await fetch(`${s.url}/v1/jobs/${long.body.id}`, { method: "DELETE" });
    expect(again.status).toBe(409);
  });

  test("a batch can be cancelled: its shards stop and the batch ends cancelled", async () => {
    const { response, body } = await post(`${s.url}/v1/generation-batches`, {
      name: "to-cancel",
      cells: [{ prompt: "a" }, { structured: { sex: "male", age: 30, findings: [] } }],
      seeds: [1, 2, 3, 4],
      steps: 250,
      shardSize: 2,
    });
    expect(response.status).toBe(202);
    expect(body.shards).toHaveLength(4);
    await waitFor(async () => ((await job(s.url, body.shards[0])).state === "running" ? true : undefined));
    const cancel = await fetch(`${s.url}/v1/jobs/${body.batch.id}`, { method: "DELETE" });
    expect(cancel.status).toBe(202);
    const batch = await waitFor(async () => {
      const current = await job(s.url, body.batch.id);
      return current.state !== "running" ? current : undefined;
    });
    expect(batch.state).toBe("cancelled");
    const states = await Promise.all(body.shards.map(async (id: string) => (await job(s.url, id)).state));
    expect(states.at(-1)).toBe("cancelled");
    expect(states.every((state: string) => state === "cancelled" || state === "succeeded")).toBe(true);
  });

  test("jobs stored before spacing, guidanceRescale, negativePrompt, negativeGuidance and precision existed run as they were queued", async () => {
    // Params as the server stored them before those fields (an upgrade finds such jobs in the
    // database): they run with leading spacing, no rescale and f32, and the manifest says so.
    const before = { model: "tiny", steps: 2, guidance: 3, sampler: "ddim" as const, bitDepth: 8 as const };
    const [generation] = s.server.queue.submit([
      { kind: "generation", priority: 10, params: { ...before, prompt: "stored before", n: 1, seed: 4242 } },
    ]);
    const batch: BatchParams = {
      ...before,
      name: "stored-before",
      cells: [{ prompt: "stored batch" }],
      seeds: [4343],
      shardSize: 1,
    };
    const [shard] = planShards("any", batch);
    expect(shard).toMatchObject({
      spacing: "leading",
      guidanceRescale: 0,
      negativePrompt: "",
      negativeGuidance: 1,
      precision: "f32",
    });
    // The batch record and its shard as stored then, the shard without the fields too.
    const [record] = s.server.store.insertMany([
      { kind: BATCH_KIND, priority: 5, params: { ...batch }, state: "running" },
    ]);
    const { spacing, guidanceRescale, negativePrompt, negativeGuidance, precision, ...storedShard } = shard;
    s.server.queue.submit([
      { kind: SHARD_KIND, priority: 5, params: { ...storedShard, batchId: record.id }, parentId: record.id },
    ]);
    for (const id of [generation.id, record.id]) {
      expect(
        await waitFor(async () => ((await job(s.url, id)).state === "succeeded" ? true : undefined)),
      ).toBe(true);
    }
    const calls = generator.calls.filter((call) => call.seed === 4242 || call.seed === 4343);
    expect(calls).toHaveLength(2);
    for (const call of calls) {
      expect(call).toMatchObject({
        spacing: "leading",
        guidanceRescale: 0,
        negativePrompt: "",
        negativeGuidance: 1,
        precision: "f32",
        sampler: "ddim",
      });
    }
    const manifest = JSON.parse(
      readFileSync(join(s.server.config.datasetsRoot, "stored-before", "manifest.json"), "utf8"),
    );
    expect(manifest).toMatchObject({
      spacing: "leading",
      guidanceRescale: 0,
      negativePrompt: "",
      negativeGuidance: 1,
      precision: "f32",
      images: 1,
    });
  });

  test("a long training yields to a generation between two steps", async () => {
    const training = s.server.queue.submit([
      { kind: "test-training", priority: 0, params: { steps: 60 } },
    ])[0];
    await waitFor(async () => (trainer.log.length >= 3 ? true : undefined));
    const { body } = await post(`${s.url}/v1/generations?wait=30`, { prompt: "urgent", steps: 3 });
    expect(body.state).toBe("succeeded");
    const during = await job(s.url, training.id);
    expect(during.state).toBe("running");
    expect(during.progress.step).toBeLessThan(60);
    await waitFor(
      async () => ((await job(s.url, training.id)).state === "succeeded" ? true : undefined),
      30_000,
    );
  });

  test("an evaluation of a predictions file: a job, then its Markdown report", async () => {
    const table = synthesizePredictions({ images: 400, patients: 200, seed: 4 });
    writeFileSync(join(s.server.config.datasetsRoot, "preds.csv"), formatPredictionsCsv(table));
    for (const [body, field] of [
      [{ predictions: "../preds.csv" }, "predictions"],
      [{ predictions: "missing.csv" }, "predictions"],
      [{ predictions: "preds.csv", validation: "nope.csv" }, "validation"],
      [{ predictions: "preds.csv", bootstrapRounds: -1 }, "bootstrapRounds"],
    ] as const) {
      const refused = await post(`${s.url}/v1/evaluations`, body);
      expect(refused.response.status).toBe(400);
      expect(refused.body.error.field).toBe(field);
    }
    const { response, body } = await post(`${s.url}/v1/evaluations`, {
      predictions: "preds.csv",
      bootstrapRounds: 20,
    });
    expect(response.status).toBe(202);
    const done = await waitFor(async () => {
      const current = await job(s.url, body.id);
      return current.state === "succeeded" || current.state === "failed" ? current : undefined;
    }, 60_000);
    expect(done.error).toBeNull();
    expect(done.result.macroAuroc).toBeGreaterThan(0.6);
    const report = await fetch(`${s.url}${done.result.report}`);
    expect(report.headers.get("content-type")).toContain("text/markdown");
    expect(await report.text()).toContain("AUROC");
    const document = (await (await fetch(`${s.url}/v1/evaluations/${body.id}`)).json()) as any;
    expect(document.schema).toBe("cxr-evaluation");
    expect(document.overall.macroAuroc.value).toBeCloseTo(done.result.macroAuroc, 10);
    expect(document.gaps.length).toBeGreaterThan(0);
    expect((await fetch(`${s.url}/v1/evaluations/job_00000000000000000000`)).status).toBe(404);
    expect((await fetch(`${s.url}/v1/evaluations/job_00000000000000000000/report`)).status).toBe(404);
  });

  test("models and datasets are listed by name; symlinks out of the root are not", async () => {
    const outside = temporaryRoot();
    try {
      mkdirSync(join(s.server.config.datasetsRoot, "phantom-a"));
      writeFileSync(join(outside.root, "secret.txt"), "x");
      symlinkSync(outside.root, join(s.server.config.datasetsRoot, "escape"));
      const datasets = (await (await fetch(`${s.url}/v1/datasets`)).json()) as any;
      const names = datasets.datasets.map((entry: any) => entry.name);
      expect(names).toContain("phantom-a");
      expect(names).not.toContain("escape");
      const models = (await (await fetch(`${s.url}/v1/models`)).json()) as any;
      expect(models.default).toBe("tiny");
      expect(models.models.map((entry: any) => entry.name)).toEqual(["tiny"]);
    } finally {
      rmSync(join(s.server.config.datasetsRoot, "escape"));
      outside.remove();
    }
  });

  test("an internal error answers 500 without a stack trace and logs the details", async () => {
    const { body } = await post(`${s.url}/v1/generations?wait=30`, {
      prompt: "will lose its file",
      steps: 1,
    });
    const image = s.server.store.image(body.images[0].id)!;
    rmSync(image.path);
    const response = await fetch(`${s.url}/v1/images/${image.id}`);
    expect(response.status).toBe(500);
    const text = await response.text();
    expect(JSON.parse(text).error.code).toBe("internal");
    expect(text).not.toMatch(/ENOENT|\.ts:\d+|\bat /);
    expect(s.logs.some((line) => line.includes("ENOENT"))).toBe(true);
  });

  test("CORS is off: no Access-Control headers", async () => {
    const response = await fetch(`${s.url}/v1/jobs`, { headers: { Origin: "http://example.test" } });
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("limits", () => {
  test("a full queue answers 429 with Retry-After; readiness reports what is missing", async () => {
    const s = await startTestServer({
      generator: new StepGenerator(MODELS, 20),
      limits: { maxQueueDepth: 2 } as any,
      readiness: () => ({ adapter: null, model: null }),
    });
    try {
      mkdirSync(join(s.server.config.modelsRoot, "tiny"), { recursive: true });
      const statuses: number[] = [];
      let retryAfter: string | null = null;
      for (let index = 0; index < 5; index++) {
        const { response } = await post(`${s.url}/v1/generations`, { prompt: `p${index}`, steps: 50 });
        statuses.push(response.status);
        if (response.status === 429) retryAfter = response.headers.get("retry-after");
      }
      // The first starts running at once, two wait in the queue, the rest are refused.
      expect(statuses.filter((status) => status === 202).length).toBeGreaterThanOrEqual(3);
      expect(statuses.at(-1)).toBe(429);
      expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
      const ready = await fetch(`${s.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as any).reasons).toEqual(["no WebGPU adapter", "no model loaded"]);
    } finally {
      await s.close();
    }
  });
});

describe("server with tokens", () => {
  const token = "s3cret-token-0123456789abcdef";
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({
      generator: new StepGenerator(MODELS),
      tokens: [token, "another-token-0123456789"],
      corsOrigins: ["http://allowed.test"],
    });
    mkdirSync(join(s.server.config.modelsRoot, "tiny"), { recursive: true });
  });
  afterAll(async () => s.close());

  test("every /v1 route needs the token; health, docs and the page do not; tokens never logged", async () => {
    for (const [method, path] of [
      ["GET", "/v1/jobs"],
      ["GET", "/v1/models"],
      ["GET", "/v1/datasets"],
      ["GET", "/v1/profile"],
      ["POST", "/v1/generations"],
      ["GET", "/v1/jobs/job_00000000000000000000"],
      ["DELETE", "/v1/jobs/job_00000000000000000000"],
      ["GET", "/v1/jobs/job_00000000000000000000/events"],
      ["GET", "/v1/images/img_00000000000000000000_0"],
    ]) {
      for (const header of [
        undefined,
        "Bearer wrong-token-0123456789",
        `Basic ${token}`,
        `Bearer ${token}x`,
      ]) {
        const response = await fetch(`${s.url}${path}`, {
          method,
          headers: header ? { Authorization: header } : {},
        });
        expect(response.status, `${method} ${path} ${header}`).toBe(401);
        expect(response.headers.get("www-authenticate")).toContain("Bearer");
      }
    }
    const auth = { Authorization: `Bearer ${token}` };
    expect((await fetch(`${s.url}/v1/jobs`, { headers: auth })).status).toBe(200);
    expect(
      (await fetch(`${s.url}/v1/jobs`, { headers: { Authorization: "Bearer another-token-0123456789" } }))
        .status,
    ).toBe(200);
    const { response, body } = await post(`${s.url}/v1/generations?wait=30`, { prompt: "x", steps: 2 }, auth);
    expect(response.status).toBe(200);
    expect((await fetch(`${s.url}${body.images[0].url}`, { headers: auth })).status).toBe(200);
    for (const path of ["/healthz", "/readyz", "/openapi.json", "/docs", "/"]) {
      expect([200, 503]).toContain((await fetch(`${s.url}${path}`)).status);
    }
    expect(s.logs.join("\n")).not.toContain(token);
  });

  test("CORS answers only configured origins", async () => {
    const allowed = await fetch(`${s.url}/healthz`, { headers: { Origin: "http://allowed.test" } });
    expect(allowed.headers.get("access-control-allow-origin")).toBe("http://allowed.test");
    const other = await fetch(`${s.url}/healthz`, { headers: { Origin: "http://other.test" } });
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
  });
});
