/**
 * Trainings over HTTP on the real trainDiffusion (phantom-tiny on a 24-image phantom): validation,
 * a generation submitted mid-training runs at once (training stops at a step boundary with a
 * checkpoint and resumes from it), the trained model is published under the models root, and a
 * cancel stops a training at its next step.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { postJson, StepGenerator, startTestServer, waitUntil, writeTestPhantom } from "./helpers.ts";

type TestServer = Awaited<ReturnType<typeof startTestServer>>;
let s: TestServer;

const post = (path: string, body: unknown) => postJson(`${s.url}${path}`, body);
const until = <T>(probe: () => Promise<T | undefined>, timeoutMs = 150_000) =>
  waitUntil(probe, { timeoutMs });

const getJob = async (id: string) => (await (await fetch(`${s.url}/v1/jobs/${id}`)).json()) as any;

beforeAll(async () => {
  s = await startTestServer({
    generator: new StepGenerator({ tiny: { name: "tiny", kind: "diffusion", size: 16 } }),
  });
  mkdirSync(join(s.server.config.modelsRoot, "tiny"), { recursive: true });
  await writeTestPhantom(join(s.server.config.datasetsRoot, "phantom"));
}, 120_000);
afterAll(async () => s?.close());

const request = {
  kind: "diffusion",
  dataset: "phantom",
  config: "phantom-tiny",
  steps: 8,
  batchSize: 3,
  checkpointEvery: 4,
  seed: 5,
};

describe("trainings", () => {
  test.each([
    [{ ...request, dataset: "../phantom" }, 400, "dataset"],
    [{ ...request, dataset: "missing" }, 400, "dataset"],
    [{ ...request, config: "phantom-huge" }, 400, "config"],
    [{ ...request, steps: 0 }, 400, "steps"],
    [{ ...request, kind: "gan" }, 400, "kind"],
    [{ ...request, output: "tiny" }, 409, "output"],
    [{ ...request, output: "a/b" }, 400, "output"],
  ])("%j -> %i naming %s", async (body, status, field) => {
    const answer = await post("/v1/trainings", body);
    expect(answer.status).toBe(status);
    expect(answer.body.error.field).toBe(field);
  });

  test("a generation submitted mid-training runs between two steps; the model is published", async () => {
    const { status, body } = await post("/v1/trainings", { ...request, output: "tiny-trained" });
    expect(status).toBe(202);
    await until(async () => ((await getJob(body.id)).progress?.step >= 1 ? true : undefined));
    const generation = await post("/v1/generations?wait=120", { prompt: "60 year old male.", steps: 2 });
    expect(generation.body.state).toBe("succeeded");
    const during = await getJob(body.id);
    expect(during.state).toBe("running");
    expect(during.progress.step).toBeLessThan(8);
    const done = await until(async () => {
      const job = await getJob(body.id);
      return job.state === "succeeded" || job.state === "failed" ? job : undefined;
    });
    expect(done.error).toBeNull();
    expect(done.result).toMatchObject({ model: "tiny-trained", steps: 8 });
    expect(done.result.preemptions).toBeGreaterThanOrEqual(1);
    expect(s.logs.some((line) => /resumed .* at step [1-7]\b/.test(line))).toBe(true);
    const models = (await (await fetch(`${s.url}/v1/models`)).json()) as any;
    expect(models.models.map((model: any) => model.name)).toContain("tiny-trained");
  });

  test("a cancel stops a training at its next step", async () => {
    const { body } = await post("/v1/trainings", { ...request, steps: 200, output: "never" });
    await until(async () => ((await getJob(body.id)).progress?.step >= 1 ? true : undefined));
    expect((await fetch(`${s.url}/v1/jobs/${body.id}`, { method: "DELETE" })).status).toBe(202);
    const job = await until(async () => {
      const current = await getJob(body.id);
      return current.state === "cancelled" ? current : undefined;
    }, 60_000);
    expect(job.progress.step).toBeLessThan(200);
    const models = (await (await fetch(`${s.url}/v1/models`)).json()) as any;
    expect(models.models.map((model: any) => model.name)).not.toContain("never");
  });
});
