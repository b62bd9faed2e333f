/**
 * Generations, trainings and evaluations through BullMQ on a real redis-server (Debian's, started
 * here on loopback): the API server (`queueUrl`) answers as without Redis while `cxr worker`
 * processes (fixtures/job-worker.ts) run the jobs on the shared data root. Each test has its own
 * BullMQ prefix, so nothing one test leaves in Redis can reach the next. Skipped without
 * /usr/bin/redis-server, except under CI=true, where it fails (CI must `apt-get install redis-server`).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { formatPredictionsCsv, synthesizePredictions } from "@cxr/classifier";
import { afterAll, beforeAll, expect, test } from "vitest";
import { DiffusionGenerator } from "../../packages/server/src/diffusion-generator.ts";
import { SAMPLING_FIELD_DEFAULTS } from "../../packages/server/src/generation.ts";
import { RedisShardProducer } from "../../packages/server/src/redis.ts";
import { type RunningServer, startServer } from "../../packages/server/src/server.ts";
import { saveTinyModel } from "./generator-setup.ts";
import { postJson, readEvents, temporaryRoot, waitUntil, writeTestPhantom } from "./helpers.ts";
import { freePort, isBun, REDIS, redisAvailable } from "./redis-helpers.ts";

const WORKER = fileURLToPath(new URL("./fixtures/job-worker.ts", import.meta.url));

const children: ChildProcess[] = [];
let root = "";
let remove: () => void = () => undefined;
let url = "";
/** A BullMQ queue object of the test; its client sets keys directly. */
let producer: RedisShardProducer | null = null;
let generator: DiffusionGenerator;

/** A child process with its output collected; `ready` resolves when `pattern` appears on stdout. */
function launch(command: string, args: string[], pattern: RegExp, what: string) {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const output = { text: "" };
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${output.text}`)), 90_000);
    child.stdout?.on("data", (chunk) => {
      output.text += String(chunk);
      if (pattern.test(output.text)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.stderr?.on("data", (chunk) => (output.text += String(chunk)));
    child.once("exit", (code) => reject(new Error(`${what} exited with ${code}: ${output.text}`)));
  });
  return { child, output, ready };
}

async function startWorkers(prefix: string, kinds: string, count: number, lockMs: number, warm = false) {
  const workers = Array.from({ length: count }, (_, index) => {
    const args = [WORKER, url, prefix, root, String(lockMs), kinds, ...(warm ? ["warm"] : [])];
    return launch(process.execPath, isBun ? args : ["--import", "tsx", ...args], /ready/, `worker ${index}`);
  });
  await Promise.all(workers.map((worker) => worker.ready));
  return workers;
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

async function api(prefix: string): Promise<RunningServer> {
  return startServer({
    dataRoot: root,
    defaultModel: "tiny",
    port: 0,
    queueUrl: url,
    queuePrefix: prefix,
    generator,
    log: () => undefined,
  });
}

const until = <T>(probe: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: string) =>
  waitUntil(probe, { timeoutMs, everyMs: 100, what });

const post = (server: RunningServer, path: string, body: unknown) => postJson(`${server.url}${path}`, body);

const getJob = async (server: RunningServer, id: string) =>
  (await (await fetch(`${server.url}/v1/jobs/${id}`)).json()) as any;

const finished = (server: RunningServer, id: string, timeoutMs: number) =>
  until(
    async () => {
      const job = await getJob(server, id);
      return ["succeeded", "failed", "cancelled"].includes(job.state) ? job : undefined;
    },
    timeoutMs,
    `job ${id} to finish`,
  );

beforeAll(async () => {
  if (!redisAvailable) return;
  ({ root, remove } = temporaryRoot("cxr-redis-jobs-"));
  const port = await freePort();
  const server = launch(
    REDIS,
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", root],
    /Ready to accept connections/,
    "redis-server",
  );
  await server.ready;
  url = `redis://127.0.0.1:${port}`;
  producer = new RedisShardProducer(url, { prefix: "test" });
  mkdirSync(join(root, "models"), { recursive: true });
  await saveTinyModel(join(root, "models"));
  await writeTestPhantom(join(root, "datasets", "phantom"));
  writeFileSync(
    join(root, "datasets", "preds.csv"),
    formatPredictionsCsv(synthesizePredictions({ images: 400, patients: 200, seed: 4 })),
  );
  generator = new DiffusionGenerator({ modelsRoot: join(root, "models") });
}, 180_000);

afterAll(async () => {
  await producer?.close();
  await Promise.all(children.map(stop));
  remove();
});

test.skipIf(!redisAvailable)(
  "a generation and an evaluation through a worker process: same images as in-process, SSE, ?wait",
  async () => {
    const server = await api("gen");
    const [worker] = await startWorkers("gen", "generation,evaluation", 1, 60_000);
    try {
      const request = {
        prompt: "60 year old female. Cardiomegaly.",
        n: 2,
        steps: 3,
        seed: 7,
        sampler: "ddim",
      };
      const queued = await post(server, "/v1/generations", request);
      expect(queued.status).toBe(202);
      expect(queued.body.params.queue).toBe("redis");
      const events = await readEvents(`${server.url}${queued.body.links.events}`, {}, 120_000);
      const types = events.map((event) => event.type);
      expect(types[0]).toBe("queued");
      expect(types).toContain("started");
      expect(types.at(-1)).toBe("done");
      const progress = events.filter((event) => event.type === "progress");
      expect(progress.length).toBeGreaterThan(0);
      expect(progress.at(-1)!.data).toMatchObject({ total: 6 });
      expect(progress.at(-1)!.data).toHaveProperty("etaSeconds");
      const job = await getJob(server, queued.body.id);
      expect(job.state).toBe("succeeded");
      expect(job.images.map((image: any) => image.seed)).toEqual([7, 8]);
      for (const image of job.images) {
        const bytes = new Uint8Array(await (await fetch(`${server.url}${image.url}`)).arrayBuffer());
        const local = await generator.generate(
          {
            model: "tiny",
            prompt: request.prompt,
            steps: 3,
            guidance: 3,
            sampler: "ddim",
            seed: image.seed,
            bitDepth: 8,
            ...SAMPLING_FIELD_DEFAULTS,
          },
          () => undefined,
        );
        expect(Buffer.compare(Buffer.from(bytes), Buffer.from(local.png)), `image ${image.index}`).toBe(0);
        const sidecar = (await (await fetch(`${server.url}${image.sidecarUrl}`)).json()) as any;
        expect(sidecar).toMatchObject({ job: job.id, index: image.index, seed: image.seed });
      }
      // A small generation answered when it finishes (?wait), from the worker.
      const waited = await post(server, "/v1/generations?wait=100", { ...request, n: 1, seed: 9 });
      expect(waited.status).toBe(200);
      expect(waited.body.images).toHaveLength(1);

      const evaluation = await post(server, "/v1/evaluations", {
        predictions: "preds.csv",
        bootstrapRounds: 20,
      });
      expect(evaluation.status).toBe(202);
      const done = await finished(server, evaluation.body.id, 60_000);
      expect(done.error).toBeNull();
      expect(done.result.macroAuroc).toBeGreaterThan(0.6);
      const report = await fetch(`${server.url}${done.result.report}`);
      expect(await report.text()).toContain("AUROC");
      // The worker wrote them; this process ran none of them.
      expect(worker.output.text).toContain(`job ${job.id} (generation) done`);
      expect(worker.output.text).toContain(`job ${done.id} (evaluation) done`);
    } finally {
      await server.close();
      await stop(worker.child);
    }
  },
  240_000,
);

test.skipIf(!redisAvailable)(
  "a training: a live worker whose lock is taken stops without writing; a worker killed after a checkpoint; another resumes; done once",
  async () => {
    const prefix = "train";
    const server = await api(prefix);
    // 20 s locks on warmed-up workers (shaders compiled: a cold first step blocks the event loop for
    // over 30 s at load 18 here), short enough that a killed worker's training is retried soon.
    const workers = await startWorkers(prefix, "training", 2, 20_000, true);
    try {
      const steps = 12;
      const queued = await post(server, "/v1/trainings", {
        kind: "diffusion",
        dataset: "phantom",
        config: "phantom-tiny",
        steps,
        batchSize: 3,
        checkpointEvery: 2,
        seed: 5,
        output: "redis-trained",
      });
      expect(queued.status).toBe(202);
      const id = queued.body.id as string;
      const run = join(root, "trainings", id);
      const holder = () =>
        until(
          () =>
            workers.find((worker) => worker.output.text.split(`job ${id} (training) taken`).length - 1 > 0),
          60_000,
          "a worker to take the training",
        );
      const state = () => {
        try {
          return JSON.parse(readFileSync(join(run, "checkpoint", "state.json"), "utf8")).step as number;
        } catch {
          return 0;
        }
      };
      const first = await holder();
      await until(() => (state() > 0 ? true : undefined), 120_000, "the first checkpoint");
      expect((await getJob(server, id)).state).toBe("running");

      // (1) Another process takes the lock from the live holder (what BullMQ's stalled check does when a
      // worker's event loop is blocked past its lock): the holder stops at its next step, writes nothing.
      const lockKey = `${prefix}:cxr-trainings:${id}:lock`;
      await (await producer!.queue.client).set(lockKey, "someone-else", "PX", 2500);
      await until(
        () => (first.output.text.includes("this copy stopped") ? true : undefined),
        60_000,
        "the holder to stop its copy",
      );
      const after = first.output.text.slice(first.output.text.indexOf("lock is gone"));
      const beforeRetake = after.split(`job ${id} (training) taken`)[0];
      expect(beforeRetake).not.toMatch(/checkpoint: step/);

      // (2) The job goes back to the queue when the taken lock expires; a worker resumes it; it is
      // killed after its next checkpoint; the other worker resumes from that checkpoint.
      const taken = () =>
        workers.map((worker) => worker.output.text.split(`job ${id} (training) taken`).length - 1);
      const retaken = await until(
        () => workers.find((worker, index) => taken()[index] >= (worker === first ? 2 : 1)),
        60_000,
        "a worker to take the training again",
      );
      await until(
        () =>
          /resumed .* at step \d+/.test(retaken.output.text.split("this copy stopped").at(-1)!)
            ? true
            : undefined,
        60_000,
        "the resume",
      );
      const resumedAt = state();
      await until(
        () => (state() > resumedAt && state() < steps ? true : state() >= steps ? false : undefined),
        120_000,
        "a checkpoint after the resume",
      ).then((ok) => {
        if (!ok) throw new Error("the training finished before the worker could be killed");
      });
      await stop(retaken.child);
      const survivor = workers.find((worker) => worker !== retaken)!;
      const killedAt = state();

      const done = await finished(server, id, 180_000);
      expect(done.state).toBe("succeeded");
      expect(done.result.steps).toBe(steps);
      expect(done.attempts).toBeGreaterThanOrEqual(3);
      expect(survivor.output.text).toMatch(new RegExp(`resumed .* at step ${killedAt}`));
      expect(survivor.output.text).toContain(`job ${id} (training) done`);
      const lossSteps = readFileSync(join(run, "loss.csv"), "utf8")
        .trim()
        .split("\n")
        .slice(1)
        .map((line) => Number(line.split(",")[0]));
      expect(lossSteps).toEqual(Array.from({ length: steps }, (_, index) => index + 1));
      expect(state()).toBe(steps);
      expect(existsSync(join(root, "models", "redis-trained", "config.json"))).toBe(true);
    } catch (error) {
      const logs = workers.map((worker, index) => `--- worker ${index}\n${worker.output.text.slice(-4000)}`);
      throw new Error(`${(error as Error).message}\n${logs.join("\n")}`);
    } finally {
      await server.close();
      await Promise.all(workers.map((worker) => stop(worker.child)));
    }
  },
  420_000,
);

test.skipIf(!redisAvailable)(
  "cancel: a queued Redis training at once, a running one at its next step on the worker",
  async () => {
    const prefix = "cancel";
    const server = await api(prefix);
    try {
      const request = {
        kind: "diffusion",
        dataset: "phantom",
        config: "phantom-tiny",
        // 60 steps: progress every 3 (logEvery), so the cancel lands early; far from done.
        steps: 60,
        batchSize: 3,
        checkpointEvery: 1000,
        seed: 6,
      };
      // No worker yet: the job waits in Redis; a cancel removes it there.
      const waiting = await post(server, "/v1/trainings", { ...request, output: "never-a" });
      expect(waiting.status).toBe(202);
      const gone = await fetch(`${server.url}/v1/jobs/${waiting.body.id}`, { method: "DELETE" });
      expect(gone.status).toBe(202);
      expect(((await gone.json()) as any).state).toBe("cancelled");

      const [worker] = await startWorkers(prefix, "training", 1, 60_000, true);
      try {
        const running = await post(server, "/v1/trainings", { ...request, output: "never-b" });
        const id = running.body.id as string;
        await until(
          async () => ((await getJob(server, id)).progress?.step >= 1 ? true : undefined),
          120_000,
          "progress",
        );
        const cancel = await fetch(`${server.url}/v1/jobs/${id}`, { method: "DELETE" });
        expect(cancel.status).toBe(202);
        const done = await finished(server, id, 60_000);
        expect(done.state, `${JSON.stringify(done.error)}\n${worker.output.text.slice(-3000)}`).toBe(
          "cancelled",
        );
        expect(done.error.code).toBe("cancelled");
        expect(done.progress.step).toBeLessThan(request.steps);
        expect(existsSync(join(root, "models", "never-b"))).toBe(false);
        expect(worker.output.text).toContain(`job ${id} (training) cancelled`);
        expect((await fetch(`${server.url}/v1/jobs/${id}`, { method: "DELETE" })).status).toBe(409);
      } finally {
        await stop(worker.child);
      }
    } finally {
      await server.close();
    }
  },
  240_000,
);

test.skipIf(!redisAvailable)(
  "cancel a Redis batch: its waiting shards leave the queue and the batch ends cancelled",
  async () => {
    const prefix = "batch-cancel";
    const server = await api(prefix);
    const shards = new RedisShardProducer(url, { prefix });
    try {
      // No worker: every shard waits in Redis until the cancel removes it.
      const response = await post(server, "/v1/generation-batches", {
        name: "cancelled-batch",
        cells: [{ prompt: "60 year old female." }, { prompt: "30 year old male." }],
        seeds: [5, 6],
        steps: 5,
        shardSize: 2,
      });
      expect(response.status).toBe(202);
      const { batch, shards: ids } = response.body as { batch: { id: string }; shards: string[] };
      expect(ids.length).toBe(2);
      for (const id of ids) expect(await shards.queue.getJobState(id)).toBe("waiting");
      const cancel = await fetch(`${server.url}/v1/jobs/${batch.id}`, { method: "DELETE" });
      expect(cancel.status).toBe(202);
      const done = await finished(server, batch.id, 30_000);
      expect(done.state).toBe("cancelled");
      expect(done.error.code).toBe("cancelled");
      expect(done.error.message).toContain("0 of 2 shards had completed");
      for (const id of ids) expect(await shards.queue.getJobState(id)).toBe("unknown");
      expect((await fetch(`${server.url}/v1/jobs/${batch.id}`, { method: "DELETE" })).status).toBe(409);
    } finally {
      await shards.close();
      await server.close();
    }
  },
  120_000,
);
