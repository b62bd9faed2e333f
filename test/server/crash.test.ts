/**
 * Durability through real processes: a server is killed with SIGKILL in the middle of a job and
 * started again on the same data root; every job answered 202 completes, each image exactly once
 * (the interrupted job re-runs with its recorded seeds and skips what it had written). SIGTERM
 * drains: the running job goes back to the queue and the process exits 0.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, test } from "vitest";
import { SAMPLING_FIELD_DEFAULTS } from "../../packages/server/src/generation.ts";
import { StepGenerator, temporaryRoot, waitUntil, writeTestPhantom } from "./helpers.ts";

const FIXTURE = fileURLToPath(new URL("./fixtures/serve-steps.ts", import.meta.url));
const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const children: ChildProcess[] = [];

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill("SIGKILL");
});

function startChild(
  dataRoot: string,
  stepMs: number,
): Promise<{ child: ChildProcess; url: string; stderr: string[] }> {
  const args = isBun
    ? [FIXTURE, dataRoot, String(stepMs)]
    : ["--import", "tsx", FIXTURE, dataRoot, String(stepMs)];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const stderr: string[] = [];
  child.stderr!.on("data", (chunk) => stderr.push(String(chunk)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr.join("")}`)), 60_000);
    let out = "";
    child.stdout!.on("data", (chunk) => {
      out += String(chunk);
      const match = /listening (\S+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve({ child, url: match[1], stderr });
      }
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code}: ${stderr.join("")}`)));
  });
}

const until = <T>(probe: () => Promise<T | undefined>, timeoutMs = 60_000) =>
  waitUntil(probe, { timeoutMs, everyMs: 25, ignoreErrors: true });

const getJob = async (url: string, id: string) => (await (await fetch(`${url}/v1/jobs/${id}`)).json()) as any;

describe("durability", () => {
  test("kill -9 mid-job, restart: every accepted job completes, every image exactly once", async () => {
    const { root, remove } = temporaryRoot();
    try {
      mkdirSync(join(root, "models", "tiny"), { recursive: true });
      const first = await startChild(root, 15);
      const submitted: { id: string; seed: number; prompt: string }[] = [];
      for (let index = 0; index < 4; index++) {
        const prompt = `crash test ${index}`;
        const response = await fetch(`${first.url}/v1/generations`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ prompt, n: 3, steps: 10, seed: 1000 * index }),
        });
        expect(response.status).toBe(202);
        submitted.push({ id: ((await response.json()) as any).id, seed: 1000 * index, prompt });
      }
      // Kill while the first job has written one image and is making its second.
      await until(async () => {
        const job = await getJob(first.url, submitted[0].id);
        return job.images.length >= 1 && job.progress?.step > 12 ? true : undefined;
      });
      first.child.kill("SIGKILL");
      await new Promise((resolve) => first.child.once("exit", resolve));
      const callsBefore = readFileSync(join(root, "calls.log"), "utf8").trim().split("\n").length;

      const second = await startChild(root, 1);
      for (const { id } of submitted) {
        await until(async () => ((await getJob(second.url, id)).state === "succeeded" ? true : undefined));
      }
      const reference = new StepGenerator({ tiny: { name: "tiny", kind: "diffusion", size: 16 } });
      for (const { id, seed, prompt } of submitted) {
        const job = await getJob(second.url, id);
        expect(job.images.map((image: any) => image.index)).toEqual([0, 1, 2]);
        expect(job.images.map((image: any) => image.seed)).toEqual([seed, seed + 1, seed + 2]);
        const files = readdirSync(join(root, "images", id)).sort();
        expect(files).toEqual(["0.json", "0.png", "1.json", "1.png", "2.json", "2.png"]);
        for (const image of job.images) {
          const served = new Uint8Array(await (await fetch(`${second.url}${image.url}`)).arrayBuffer());
          const expected = await reference.generate(
            {
              model: "tiny",
              prompt,
              steps: 10,
              guidance: 3,
              sampler: "pndm",
              seed: image.seed,
              bitDepth: 8,
              ...SAMPLING_FIELD_DEFAULTS,
            },
            () => undefined,
          );
          expect(Buffer.compare(Buffer.from(served), Buffer.from(expected.png))).toBe(0);
        }
      }
      // Twelve images; the one being made at the kill is made twice, none written before it again.
      const calls = readFileSync(join(root, "calls.log"), "utf8")
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as { seed: number; prompt: string });
      const keys = calls.map((call) => `${call.prompt}/${call.seed}`);
      expect(new Set(keys).size).toBe(12);
      expect(calls.length).toBeLessThanOrEqual(13);
      expect(keys.slice(callsBefore).filter((key) => keys.slice(0, callsBefore - 1).includes(key))).toEqual(
        [],
      );
      const metrics = await (await fetch(`${second.url}/metrics`)).text();
      expect(metrics).toContain("cxr_images_generated_total 12");
      second.child.kill("SIGTERM");
      expect(await new Promise((resolve) => second.child.once("exit", resolve))).toBe(0);
    } finally {
      remove();
    }
  });

  test("kill -9 mid-training, restart: the training resumes from its last checkpoint", async () => {
    const { root, remove } = temporaryRoot();
    try {
      mkdirSync(join(root, "models", "tiny"), { recursive: true });
      await writeTestPhantom(join(root, "datasets", "phantom"));
      const first = await startChild(root, 1);
      const response = await fetch(`${first.url}/v1/trainings`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          kind: "diffusion",
          dataset: "phantom",
          config: "phantom-tiny",
          steps: 8,
          batchSize: 3,
          checkpointEvery: 3,
          output: "resumed-model",
        }),
      });
      expect(response.status).toBe(202);
      const { id } = (await response.json()) as any;
      await until(
        async () => ((await getJob(first.url, id)).progress?.step >= 4 ? true : undefined),
        150_000,
      );
      first.child.kill("SIGKILL");
      await new Promise((resolve) => first.child.once("exit", resolve));

      const second = await startChild(root, 1);
      const job = await until(async () => {
        const current = await getJob(second.url, id);
        return current.state === "succeeded" || current.state === "failed" ? current : undefined;
      }, 150_000);
      expect(job.error).toBeNull();
      expect(job.attempts).toBe(2);
      expect(job.result).toMatchObject({ model: "resumed-model", steps: 8 });
      expect(second.stderr.join("")).toMatch(/resumed .* at step [36]\b/);
      second.child.kill("SIGTERM");
      await new Promise((resolve) => second.child.once("exit", resolve));
    } finally {
      remove();
    }
  });

  test("classifier training: SIGTERM checkpoints mid-epoch and exits 0, kill -9 later, restarts resume and complete", async () => {
    const { root, remove } = temporaryRoot();
    try {
      mkdirSync(join(root, "models", "tiny"), { recursive: true });
      // 240 films: an epoch of about 20 batches, long enough that a SIGTERM sent at batch 2 lands
      // inside it on a loaded machine too (with 90 films, 8 batches, a CI run beside a training run
      // finished the epoch before the drain reached the loop).
      await writeTestPhantom(join(root, "datasets", "real"), { count: 240, institution: "highland" });
      const first = await startChild(root, 1);
      const response = await fetch(`${first.url}/v1/trainings`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          kind: "classifier",
          dataset: "real",
          config: "densenet-bc-tiny",
          imageSize: 32,
          batchSize: 8,
          epochs: 3,
          bootstrapRounds: 0,
          output: "resumed-classifier",
        }),
      });
      expect(response.status).toBe(202);
      const { id } = (await response.json()) as any;
      const started = await until(async () => {
        const job = await getJob(first.url, id);
        return job.progress?.step >= 2 ? job : undefined;
      }, 150_000);
      const perEpoch = started.progress.total / 3;
      first.child.kill("SIGTERM");
      expect(await new Promise((resolve) => first.child.once("exit", resolve))).toBe(0);
      expect(first.stderr.join("")).toMatch(/stopped \(asked\) in real epoch 1 after batch \d+/);
      expect(first.stderr.join("")).toContain("interrupted by the drain");

      const second = await startChild(root, 1);
      await until(
        async () => ((await getJob(second.url, id)).progress?.step >= perEpoch + 2 ? true : undefined),
        150_000,
      );
      expect(second.stderr.join("")).toMatch(/resuming .*: phase real, 0 epochs done/);
      second.child.kill("SIGKILL");
      await new Promise((resolve) => second.child.once("exit", resolve));

      const third = await startChild(root, 1);
      const job = await until(async () => {
        const current = await getJob(third.url, id);
        return current.state === "succeeded" || current.state === "failed" ? current : undefined;
      }, 150_000);
      expect(job.error).toBeNull();
      expect(job.attempts).toBe(3);
      expect(job.result).toMatchObject({ model: "resumed-classifier", epochs: 3, steps: 3 * perEpoch });
      expect(third.stderr.join("")).toMatch(/resuming .*: phase real, [12] epochs done/);
      expect(readdirSync(join(root, "models", "resumed-classifier"))).toContain("model.safetensors");
      third.child.kill("SIGTERM");
      await new Promise((resolve) => third.child.once("exit", resolve));
    } finally {
      remove();
    }
  });

  test("SIGTERM drains: no new work, the running job goes back to the queue, exit 0, resumes on restart", async () => {
    const { root, remove } = temporaryRoot();
    try {
      mkdirSync(join(root, "models", "tiny"), { recursive: true });
      const first = await startChild(root, 20);
      const response = await fetch(`${first.url}/v1/generations`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: "drain", n: 4, steps: 10, seed: 5 }),
      });
      const { id } = (await response.json()) as any;
      await until(async () => ((await getJob(first.url, id)).images.length >= 1 ? true : undefined));
      first.child.kill("SIGTERM");
      expect(await new Promise((resolve) => first.child.once("exit", resolve))).toBe(0);
      expect(first.stderr.join("")).toContain("interrupted by the drain");

      const second = await startChild(root, 1);
      const job = await until(async () => {
        const current = await getJob(second.url, id);
        return current.state === "succeeded" ? current : undefined;
      });
      expect(job.images.map((image: any) => image.seed)).toEqual([5, 6, 7, 8]);
      expect(job.attempts).toBe(2);
      second.child.kill("SIGTERM");
      await new Promise((resolve) => second.child.once("exit", resolve));
    } finally {
      remove();
    }
  });
});
