/**
 * Many machines: generation shards through BullMQ on Redis. Producers add shard jobs (the same
 * `ShardParams` the in-process queue runs) to the `cxr-generation-shards` queue; `cxr worker` on each
 * GPU machine pulls them. A worker that dies mid-shard loses its lock; BullMQ's stalled-job check
 * puts the shard back, another worker takes it and skips every item already written (PNG and sidecar
 * on the shared datasets root, both written atomically), so every image is written exactly once.
 */
import { createRequire } from "node:module";
import type { Job as BullJob, Queue, QueueEvents, Worker } from "bullmq";
import {
  BATCH_KIND,
  type BatchParams,
  makeShardItem,
  planShards,
  type ShardParams,
  writeBatchOutputs,
} from "./batch.ts";
import type { ImageGenerator } from "./generation.ts";
import type { WorkQueue } from "./queue.ts";

export const SHARD_QUEUE = "cxr-generation-shards";

const require = createRequire(import.meta.url);
const bullmq = () => require("bullmq") as typeof import("bullmq");

/** Parses `redis://HOST:PORT` (loopback or a private host you run); refuses anything else. */
export function redisConnection(url: string): { host: string; port: number } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`--queue ${url}: expected redis://HOST:PORT`);
  }
  if (parsed.protocol !== "redis:") throw new Error(`--queue ${url}: expected redis://HOST:PORT`);
  const port = parsed.port ? Number(parsed.port) : 6379;
  if (!parsed.hostname || !Number.isInteger(port))
    throw new Error(`--queue ${url}: expected redis://HOST:PORT`);
  return { host: parsed.hostname, port };
}

export interface RedisTimings {
  /** How long a worker's lock on a shard lasts without renewal (ms). Default 30,000. */
  lockDurationMs?: number;
  /** How often workers look for shards whose worker died (ms). Default 15,000. */
  stalledIntervalMs?: number;
}

/** Adds shards to the Redis queue; job ids are `<batch>-<k>`, so adding a shard twice is a no-op. */
export class RedisShardProducer {
  readonly queue: Queue;
  readonly events: QueueEvents;

  constructor(url: string) {
    const { Queue, QueueEvents } = bullmq();
    const connection = redisConnection(url);
    this.queue = new Queue(SHARD_QUEUE, { connection });
    this.events = new QueueEvents(SHARD_QUEUE, { connection });
  }

  async submit(shards: ShardParams[]): Promise<string[]> {
    const jobs = await this.queue.addBulk(
      shards.map((shard, index) => ({
        name: "shard",
        data: shard,
        opts: {
          jobId: `${shard.batchId}-${index}`,
          attempts: 5,
          backoff: { type: "fixed", delay: 1000 },
          removeOnComplete: false,
          removeOnFail: false,
        },
      })),
    );
    return jobs.map((job) => job.id!);
  }

  /** Resolves when every one of `ids` has completed; rejects when one fails for good or time runs out. */
  async waitFor(ids: string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const states = await Promise.all(ids.map((id) => this.queue.getJobState(id)));
      if (states.every((state) => state === "completed")) return;
      const failed = ids.filter((_, index) => states[index] === "failed");
      if (failed.length > 0) throw new Error(`shards failed: ${failed.join(", ")}`);
      if (Date.now() > deadline)
        throw new Error(`shards not done after ${timeoutMs} ms: ${states.join(", ")}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  async close(): Promise<void> {
    await this.events.close();
    await this.queue.close();
  }
}

export interface WorkerOptions extends RedisTimings {
  queueUrl: string;
  datasetsRoot: string;
  generator: ImageGenerator;
  /** Called after each item is written (made) or found on disk (skipped). */
  onItem?: (event: { shard: string; path: string; made: boolean }) => void;
  log?: (line: string) => void;
}

/** Runs one shard at a time from the Redis queue until `close()`. */
export function startShardWorker(options: WorkerOptions): { worker: Worker; close(): Promise<void> } {
  const { Worker } = bullmq();
  const log = options.log ?? ((line: string) => process.stderr.write(`[cxr worker] ${line}\n`));
  const worker = new Worker(
    SHARD_QUEUE,
    async (job: BullJob) => {
      const params = job.data as ShardParams;
      if (!options.generator.hasModel(params.model)) {
        throw new Error(`model "${params.model}" is not under this worker's models root`);
      }
      let made = 0;
      const total = params.items.length * params.steps;
      for (const [index, item] of params.items.entries()) {
        const result = await makeShardItem(
          options.generator,
          options.datasetsRoot,
          params,
          item,
          () => undefined,
        );
        if (result.made) made++;
        options.onItem?.({ shard: job.id!, path: item.path, made: result.made });
        await job.updateProgress(Math.round((100 * (index + 1) * params.steps) / total));
      }
      return { made, skipped: params.items.length - made, items: params.items.length };
    },
    {
      connection: redisConnection(options.queueUrl),
      concurrency: 1,
      lockDuration: options.lockDurationMs ?? 30_000,
      stalledInterval: options.stalledIntervalMs ?? 15_000,
      maxStalledCount: 5,
    },
  );
  worker.on("failed", (job, error) => log(`shard ${job?.id} failed: ${error.message}`));
  worker.on("completed", (job) => log(`shard ${job.id} done`));
  return { worker, close: () => worker.close() };
}

/**
 * Settles batches whose shards went to Redis: when every shard (`<batch>-<k>`) has completed, writes
 * train.csv and manifest.json and marks the batch succeeded; a shard failed for good fails it.
 */
export async function settleRedisBatches(
  queue: WorkQueue,
  producer: RedisShardProducer,
  datasetsRoot: string,
): Promise<void> {
  const store = queue.store;
  for (const batch of store.list({ kind: BATCH_KIND, state: "running", limit: 1000 })) {
    const params = batch.params as unknown as BatchParams;
    if (params.queue !== "redis") continue;
    const ids = planShards(batch.id, params).map((_, index) => `${batch.id}-${index}`);
    const states = await Promise.all(ids.map((id) => producer.queue.getJobState(id)));
    if (states.some((state) => state === "failed")) {
      store.finish(batch.id, "failed", {
        error: {
          code: "shard_failed",
          message: `${states.filter((state) => state === "failed").length} of ${ids.length} shards failed on the workers`,
        },
      });
      queue.announce({ type: "failed", job: store.get(batch.id)! });
      continue;
    }
    if (!states.every((state) => state === "completed")) continue;
    const jobs = await Promise.all(ids.map((id) => producer.queue.getJob(id)));
    const summary = jobs.map((job, index) => ({
      id: ids[index],
      items: (job?.data as ShardParams | undefined)?.items.length ?? 0,
      attempts: job?.attemptsMade ?? 0,
    }));
    await writeBatchOutputs(store, batch, summary, datasetsRoot);
    queue.announce({ type: "done", job: store.get(batch.id)! });
  }
}
