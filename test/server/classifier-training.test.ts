/**
 * Classifier trainings over HTTP on the real trainClassifierRun (the tiny DenseNet-BC at 32 px on a
 * small phantom): validation naming each field, progress events in order, a generation served
 * between two steps (the run stops with a checkpoint holding its place in the epoch and resumes)
 * with the same weights as an uninterrupted run, the strategies mix and pretrain-finetune, the
 * classifier published under the models root, a cancel at the next step, and a bad dataset failing
 * with a message that names it (and no server path).
 */
import { mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { readSafetensors } from "@cxr/kernels";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  postJson,
  readEvents,
  StepGenerator,
  startTestServer,
  waitUntil,
  writeTestPhantom,
} from "./helpers.ts";

type TestServer = Awaited<ReturnType<typeof startTestServer>>;
let s: TestServer;

const post = (path: string, body: unknown) => postJson(`${s.url}${path}`, body);
const until = <T>(probe: () => Promise<T | undefined>, timeoutMs = 240_000) =>
  waitUntil(probe, { timeoutMs });

const getJob = async (id: string) => (await (await fetch(`${s.url}/v1/jobs/${id}`)).json()) as any;
const finished = (id: string) =>
  until(async () => {
    const job = await getJob(id);
    return ["succeeded", "failed", "cancelled"].includes(job.state) ? job : undefined;
  });

beforeAll(async () => {
  s = await startTestServer({
    generator: new StepGenerator({ tiny: { name: "tiny", kind: "diffusion", size: 16 } }),
  });
  mkdirSync(join(s.server.config.modelsRoot, "tiny"), { recursive: true });
  mkdirSync(join(s.server.config.datasetsRoot, "empty"), { recursive: true });
  await writeTestPhantom(join(s.server.config.datasetsRoot, "real"), { count: 90, institution: "highland" });
  await writeTestPhantom(join(s.server.config.datasetsRoot, "synthetic"), { count: 40, seed: 4 });
}, 120_000);
afterAll(async () => s?.close());

const request = {
  kind: "classifier",
  dataset: "real",
  config: "densenet-bc-tiny",
  imageSize: 32,
  batchSize: 8,
  epochs: 2,
  bootstrapRounds: 0,
  seed: 5,
};

describe("classifier trainings", () => {
  test.each([
    [{ ...request, strategy: "mix" }, 400, "synthetic"],
    [{ ...request, strategy: "pretrain-finetune", synthetic: "../synthetic" }, 400, "synthetic"],
    [{ ...request, strategy: "mix", synthetic: "missing" }, 400, "synthetic"],
    [{ ...request, config: "densenet-huge" }, 400, "config"],
    [{ ...request, strategy: "gan" }, 400, "strategy"],
    [{ ...request, epochs: 0 }, 400, "epochs"],
    [{ ...request, steps: 8 }, 400, "steps"],
    [{ ...request, mixRatio: 1 }, 400, "mixRatio"],
    [{ ...request, institution: "a/b" }, 400, "institution"],
    [{ ...request, dataset: "/etc" }, 400, "dataset"],
    [{ ...request, output: "tiny" }, 409, "output"],
  ])("%j -> %i naming %s", async (body, status, field) => {
    const answer = await post("/v1/trainings", body);
    expect(answer.status).toBe(status);
    expect(answer.body.error.field).toBe(field);
  });

  test("progress events; a generation runs between two steps; same weights as an uninterrupted run; published", async () => {
    const { status, body } = await post("/v1/trainings", { ...request, output: "cls-paused" });
    expect(status).toBe(202);
    const eventsPromise = readEvents(`${s.url}${body.links.events}`, {}, 240_000);
    await until(async () => ((await getJob(body.id)).progress?.step >= 2 ? true : undefined));
    const generation = await post("/v1/generations?wait=120", { prompt: "60 year old male.", steps: 2 });
    expect(generation.body.state).toBe("succeeded");
    const during = await getJob(body.id);
    expect(during.state).toBe("running");
    expect(during.progress.step).toBeLessThan(during.progress.total);

    const paused = await finished(body.id);
    expect(paused.error).toBeNull();
    expect(paused.result).toMatchObject({
      model: "cls-paused",
      kind: "classifier",
      strategy: "real",
      phases: ["real"],
      epochs: 2,
    });
    expect(paused.result.preemptions).toBeGreaterThanOrEqual(1);
    expect(paused.result.steps).toBe(paused.progress.total);
    // The pause lands mid-epoch or, when the request arrives as an epoch ends (a loaded machine), at
    // the epoch's end; either way the training stopped for the generation and resumed exactly.
    expect(
      s.logs.some((line) =>
        /stopped \(asked\) (in real epoch \d after batch \d+ of \d+|after real epoch \d);/.test(line),
      ),
    ).toBe(true);

    const events = await eventsPromise;
    const types = events.map((event) => event.type);
    expect(types.slice(0, 2)).toEqual(["queued", "started"]);
    expect(types.at(-1)).toBe("done");
    const steps = events
      .filter((event) => event.type === "progress")
      .map((event) => event.data.step as number);
    expect(steps.length).toBeGreaterThan(2);
    expect(steps).toEqual([...steps].sort((a, b) => a - b));

    const published = readdirSync(join(s.server.config.modelsRoot, "cls-paused")).sort();
    for (const name of ["model.json", "model.safetensors", "metrics.csv", "predictions-test.csv"]) {
      expect(published).toContain(name);
    }
    expect(published.some((name) => /checkpoint|^best-|^run\.json$|\.tmp-/.test(name))).toBe(false);

    const straight = await post("/v1/trainings", { ...request, output: "cls-straight" });
    const done = await finished(straight.body.id);
    expect(done.result.preemptions).toBe(0);
    const a = readSafetensors(join(s.server.config.modelsRoot, "cls-straight", "model.safetensors")).tensors;
    const b = readSafetensors(join(s.server.config.modelsRoot, "cls-paused", "model.safetensors")).tensors;
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [name, tensor] of a) expect(b.get(name)!.data, name).toEqual(tensor.data);
  });

  test("mix and pretrain-finetune", async () => {
    const mix = await post("/v1/trainings", {
      ...request,
      strategy: "mix",
      synthetic: "synthetic",
      mixRatio: 0.25,
      epochs: 1,
    });
    const staged = await post("/v1/trainings", {
      ...request,
      strategy: "pretrain-finetune",
      synthetic: "synthetic",
      pretrainEpochs: 1,
      epochs: 1,
    });
    expect([mix.status, staged.status]).toEqual([202, 202]);
    const [mixed, pretrained] = [await finished(mix.body.id), await finished(staged.body.id)];
    expect(mixed.error).toBeNull();
    expect(mixed.result).toMatchObject({ strategy: "mix", phases: ["mix"], epochs: 1 });
    expect(pretrained.error).toBeNull();
    expect(pretrained.result).toMatchObject({
      strategy: "pretrain-finetune",
      phases: ["pretrain", "finetune"],
      epochs: 2,
    });
  });

  test("a cancel stops a classifier training at its next step; a bad dataset fails naming it", async () => {
    const { body } = await post("/v1/trainings", { ...request, epochs: 200, output: "never" });
    await until(async () => ((await getJob(body.id)).progress?.step >= 1 ? true : undefined));
    expect((await fetch(`${s.url}/v1/jobs/${body.id}`, { method: "DELETE" })).status).toBe(202);
    const job = await finished(body.id);
    expect(job.state).toBe("cancelled");
    expect(job.progress.step).toBeLessThan(20);
    const models = (await (await fetch(`${s.url}/v1/models`)).json()) as any;
    expect(models.models.map((model: any) => model.name)).not.toContain("never");

    const bad = await post("/v1/trainings", { ...request, dataset: "empty" });
    const failed = await finished(bad.body.id);
    expect(failed.state).toBe("failed");
    expect(failed.error.code).toBe("training_failed");
    expect(failed.error.message).toContain("empty");
    expect(failed.error.message).not.toContain(s.server.config.datasetsRoot);
  });
});
