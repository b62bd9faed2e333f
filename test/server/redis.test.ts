/**
 * Shards through BullMQ on a real redis-server (Debian's, started here on loopback): two worker
 * processes on the real generator, one killed with SIGKILL in the middle of a shard; every shard
 * completes and every image is written exactly once. Skipped without /usr/bin/redis-server, except
 * under CI=true, where it fails (CI must `apt-get install redis-server`).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, expect, test } from "vitest";
import { batchItems, type ShardParams } from "../../packages/server/src/batch.ts";
import { DiffusionGenerator } from "../../packages/server/src/diffusion-generator.ts";
import { RedisShardProducer } from "../../packages/server/src/redis.ts";
import { startServer } from "../../packages/server/src/server.ts";
import { saveTinyModel } from "./generator-setup.ts";
import { temporaryRoot } from "./helpers.ts";
import { freePort, isBun, REDIS, redisAvailable } from "./redis-helpers.ts";

const WORKER = fileURLToPath(new URL("./fixtures/worker.ts", import.meta.url));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});

function started(child: ChildProcess, pattern: RegExp, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${text}`)), 90_000);
    const listen = (chunk: Buffer) => {
      text += String(chunk);
      if (pattern.test(text)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on("data", listen);
    child.stderr?.on("data", (chunk) => (text += String(chunk)));
    child.once("exit", (code) => reject(new Error(`${what} exited with ${code}: ${text}`)));
  });
}

test.skipIf(!redisAvailable)(
  "two workers, one killed mid-shard: every image written exactly once",
  async () => {
    const { root, remove } = temporaryRoot();
    let producer: RedisShardProducer | null = null;
    try {
      const port = await freePort();
      const redis = spawn(
        REDIS,
        ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", root],
        {
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      children.push(redis);
      await started(redis, /Ready to accept connections/, "redis-server");
      const url = `redis://127.0.0.1:${port}`;
      const models = join(root, "models");
      const datasets = join(root, "datasets");
      mkdirSync(models, { recursive: true });
      mkdirSync(datasets, { recursive: true });
      await saveTinyModel(models);
      const log = join(root, "writes.log");
      const workers = [0, 1].map(() => {
        const args = [WORKER, url, models, datasets, log];
        const child = spawn(process.execPath, isBun ? args : ["--import", "tsx", ...args], {
          stdio: ["ignore", "pipe", "pipe"],
        });
        children.push(child);
        return child;
      });
      const outputs = workers.map((child) => {
        const output = { text: "" };
        child.stderr?.on("data", (chunk) => (output.text += String(chunk)));
        return output;
      });
      await Promise.all(workers.map((child, index) => started(child, /ready/, `worker ${index}`)));

      const items = batchItems({
        name: "grid",
        model: "tiny",
        cells: [
          { structured: { sex: "female", age: 70, race: "WHITE", findings: ["Cardiomegaly"] } },
          { structured: { sex: "male", age: 40, race: null, findings: [] } },
          { prompt: "55 year old BLACK male. Cardiomegaly." },
        ],
        seeds: [1, 2, 3, 4],
        steps: 20,
        guidance: 3,
        sampler: "ddim",
        bitDepth: 8,
        shardSize: 3,
      });
      const shards: ShardParams[] = [];
      for (let start = 0; start < items.length; start += 3) {
        shards.push({
          batchId: "batch1",
          dataset: "grid",
          model: "tiny",
          steps: 20,
          guidance: 3,
          sampler: "ddim",
          bitDepth: 8,
          items: items.slice(start, start + 3),
        });
      }
      producer = new RedisShardProducer(url);
      const ids = await producer.submit(shards);
      expect(ids).toHaveLength(4);

      // Kill the worker that wrote the first image, while it is inside a shard.
      const deadline = Date.now() + 120_000;
      let victimPid = 0;
      while (Date.now() < deadline) {
        if (existsSync(log)) {
          const lines = readFileSync(log, "utf8").trim().split("\n").filter(Boolean);
          const first = lines.length > 0 ? (JSON.parse(lines[0]) as { pid: number; shard: string }) : null;
          if (first && lines.filter((line) => line.includes(`"shard":"${first.shard}"`)).length < 3) {
            victimPid = first.pid;
            break;
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(victimPid).toBeGreaterThan(0);
      const victim = workers.find((child) => child.pid === victimPid)!;
      victim.kill("SIGKILL");
      await new Promise((resolve) => victim.once("exit", resolve));

      await producer.waitFor(ids, 300_000).catch((error: Error) => {
        const logs = outputs.map((output, index) => `--- worker ${index}\n${output.text.slice(-3000)}`);
        throw new Error(`${error.message}\n${logs.join("\n")}`);
      });
      const writes = readFileSync(log, "utf8")
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as { path: string; pid: number });
      expect(writes.map((write) => write.path).sort()).toEqual(items.map((item) => item.path).sort());
      expect(new Set(writes.map((write) => write.pid)).size).toBe(2);
      for (const item of items) expect(existsSync(join(datasets, item.path)), item.path).toBe(true);
      // The killed worker's shard was retried by the other worker.
      const retried = await Promise.all(ids.map(async (id) => (await producer!.queue.getJob(id))!));
      expect(retried.some((job) => job.attemptsMade > 1 || (job as any).stalledCounter > 0)).toBe(true);

      // The API server with --queue: a batch's shards go to the surviving worker; the batch settles.
      const server = await startServer({
        dataRoot: join(root, "api"),
        modelsRoot: models,
        datasetsRoot: datasets,
        defaultModel: "tiny",
        port: 0,
        queueUrl: url,
        generator: new DiffusionGenerator({ modelsRoot: models }),
        log: () => undefined,
      });
      try {
        const response = await fetch(`${server.url}/v1/generation-batches`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({
            name: "via-api",
            cells: [{ prompt: "60 year old female." }, { prompt: "30 year old male." }],
            seeds: [5, 6],
            steps: 5,
            shardSize: 2,
          }),
        });
        expect(response.status).toBe(202);
        const { batch, shards: shardIds } = (await response.json()) as any;
        expect(shardIds).toEqual([`${batch.id}-0`, `${batch.id}-1`]);
        const until = Date.now() + 120_000;
        let settled: any;
        do {
          await new Promise((resolve) => setTimeout(resolve, 200));
          settled = (await (await fetch(`${server.url}/v1/jobs/${batch.id}`)).json()) as any;
        } while (settled.state === "running" && Date.now() < until);
        expect(settled.state).toBe("succeeded");
        expect(settled.result).toMatchObject({ dataset: "via-api", images: 4, shards: 2, queue: "redis" });
        const csv = readFileSync(join(datasets, "via-api", "train.csv"), "utf8")
          .trim()
          .split("\n");
        expect(csv).toHaveLength(5);
        const cancel = await fetch(`${server.url}/v1/jobs/${batch.id}`, { method: "DELETE" });
        expect(cancel.status).toBe(409);
      } finally {
        await server.close();
      }
    } finally {
      await producer?.close();
      for (const child of children)
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      remove();
    }
  },
  600_000,
);
