/**
 * `startServer(options)`: opens the jobs database under the data root, starts the one GPU work
 * queue, and serves the API on loopback (127.0.0.1 unless told otherwise). Returns the URL and a
 * `close()` that drains: no new work, the running job stops at its next step (a training saves its
 * checkpoint) and goes back to the queue, then the database closes.
 */
import { mkdirSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Gpu } from "@cxr/kernels";
import { serve } from "@hono/node-server";
import type { OpenAPIHono } from "@hono/zod-openapi";
import { createApp, type Readiness } from "./app.ts";
import { TokenSet } from "./auth.ts";
import {
  BATCH_KIND,
  type BatchParams,
  planShards,
  reportBatchProgress,
  SHARD_KIND,
  ShardRunner,
  settleBatches,
} from "./batch.ts";
import { defaultConfig, type ServerConfig } from "./config.ts";
import { openDatabase } from "./db.ts";
import { EvaluationRunner } from "./evaluation.ts";
import { GenerationRunner, type ImageGenerator } from "./generation.ts";
import { type JobRunner, WorkQueue } from "./queue.ts";
import { RedisJobs, RedisShardProducer, settleRedisBatches } from "./redis.ts";
import { JobStore } from "./store.ts";
import { TrainingRunner } from "./training.ts";

export interface StartServerOptions extends Partial<Omit<ServerConfig, "dataRoot">> {
  dataRoot: string;
  /** Port; 0 picks a free one. Default 8787. */
  port?: number;
  /** Default 127.0.0.1 (loopback only). */
  host?: string;
  /** Makes the images of generation jobs (the real one wraps @cxr/diffusion's createPipeline). */
  generator: ImageGenerator;
  /** More job kinds (trainings, evaluations, or a test's own). */
  runners?: JobRunner[];
  /** The device trainings run on (default: @cxr/kernels' defaultGpu). */
  gpu?: () => Promise<Gpu>;
  /** Default: a WebGPU adapter name and the default model, as the generator reports them. */
  readiness?: () => Readiness;
  /**
   * `redis://HOST:PORT`: generation-batch shards go to BullMQ on that Redis (run `cxr worker` on the
   * GPU machines, sharing the datasets root); the batch settles here when its shards complete.
   */
  queueUrl?: string;
  /** BullMQ's key prefix on that Redis (default "bull"); workers must use the same. */
  queuePrefix?: string;
  /** Log lines (default stderr). Tokens and request bodies are never logged. */
  log?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  port: number;
  host: string;
  app: OpenAPIHono;
  queue: WorkQueue;
  store: JobStore;
  config: ServerConfig;
  /** Drains the queue, stops listening, closes the database. */
  close(): Promise<void>;
}

export async function startServer(options: StartServerOptions): Promise<RunningServer> {
  const {
    port = 8787,
    host = "127.0.0.1",
    generator,
    runners = [],
    dataRoot,
    readiness,
    gpu,
    queueUrl,
    queuePrefix,
    ...rest
  } = options;
  const log = options.log ?? ((line: string) => process.stderr.write(`[cxr serve] ${line}\n`));
  const config = defaultConfig({ ...rest, dataRoot });
  for (const folder of [
    config.dataRoot,
    config.modelsRoot,
    config.datasetsRoot,
    join(config.dataRoot, "images"),
  ]) {
    mkdirSync(folder, { recursive: true });
  }
  const db = openDatabase(join(config.dataRoot, "jobs.sqlite"));
  const store = new JobStore(db);
  const training = new TrainingRunner({
    datasetsRoot: config.datasetsRoot,
    modelsRoot: config.modelsRoot,
    trainingsRoot: join(config.dataRoot, "trainings"),
    gpu,
    log,
  });
  // With Redis, generations, trainings and evaluations run on the workers: this process has no
  // runner for them, so its queue never takes (or requeues after a restart) their records.
  const builtIn = [
    ...(queueUrl ? [] : [new GenerationRunner(generator, join(config.dataRoot, "images"))]),
    new ShardRunner(generator, config.datasetsRoot),
    ...(queueUrl
      ? []
      : [training, new EvaluationRunner(config.datasetsRoot, join(config.dataRoot, "evaluations"))]),
  ];
  const queue = new WorkQueue(store, [...builtIn, ...runners], {
    maxQueueDepth: config.limits.maxQueueDepth,
    log,
  });
  const producer = queueUrl ? new RedisShardProducer(queueUrl, { prefix: queuePrefix }) : null;
  const remote = queueUrl
    ? new RedisJobs(queue, {
        queueUrl,
        prefix: queuePrefix,
        imagesRoot: join(config.dataRoot, "images"),
        log,
      })
    : null;
  // Redis batches settle when their shards end (BullMQ events, a 2 s sweep) and after a cancel.
  let settling = Promise.resolve();
  const settleRedis = () => {
    if (!producer) return settling;
    settling = settling
      .then(() => settleRedisBatches(queue, producer, config.datasetsRoot))
      .catch((error) => log(`settling Redis batches failed: ${(error as Error).stack ?? error}`));
    return settling;
  };
  const app = createApp({
    remote: remote ?? undefined,
    redisBatches: producer
      ? async (params) => {
          const [batch] = store.insertMany([
            { kind: BATCH_KIND, priority: 10, params: { ...params, queue: "redis" }, state: "running" },
          ]);
          try {
            const shards = await producer.submit(planShards(batch.id, params));
            return { batch, shards };
          } catch (error) {
            store.finish(batch.id, "failed", {
              error: { code: "not_queued", message: "the Redis queue refused the shards" },
            });
            throw error;
          }
        }
      : undefined,
    cancelRedisBatch: producer
      ? async (batch) => {
          const params = batch.params as unknown as BatchParams;
          store.flagCancel(batch.id);
          await producer.cancel(planShards(batch.id, params).map((_, index) => `${batch.id}-${index}`));
          await settleRedis();
          return store.get(batch.id)!;
        }
      : undefined,
    config,
    store,
    queue,
    generator,
    tokens: new TokenSet(config.tokens),
    readiness: readiness ?? (() => ({ adapter: null, model: config.defaultModel })),
    log,
  });
  // Batches settle (CSV + manifest) when their last shard ends; also now, for a crash in between.
  const settle = () => {
    settling = settling
      .then(() => settleBatches(queue, config.datasetsRoot))
      .catch((error) => log(`settling batches failed: ${(error as Error).stack ?? error}`));
    return settling;
  };
  queue.subscribeAll((event) => {
    if (
      event.job.kind === SHARD_KIND &&
      (event.type === "done" || event.type === "failed" || event.type === "cancelled")
    ) {
      if (event.type === "done") reportBatchProgress(queue, event.job);
      settle();
    }
  });
  let settleTimer: NodeJS.Timeout | null = null;
  if (producer) {
    producer.events.on("completed", settleRedis);
    producer.events.on("failed", settleRedis);
    settleTimer = setInterval(settleRedis, 2000);
    settleTimer.unref();
    settleRedis();
  }
  queue.start();
  await remote?.start();
  await settle();
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const instance = serve({ fetch: app.fetch, port, hostname: host }, () => resolve(instance));
    instance.once("error", reject);
  });
  // A training step can hold the event loop for seconds; with Node's 5 s keep-alive timeout the
  // server would close idle connections just as clients reuse them (ECONNRESET).
  const http = server as unknown as { keepAliveTimeout: number; headersTimeout: number };
  http.keepAliveTimeout = 65_000;
  http.headersTimeout = 66_000;
  const address = server.address() as AddressInfo;
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `http://${shownHost}:${address.port}`;
  log(`listening on ${url} (${db.driver}, data root ${config.dataRoot})`);
  let closing: Promise<void> | null = null;
  return {
    url,
    port: address.port,
    host: address.address,
    app,
    queue,
    store,
    config,
    close: () =>
      (closing ??= (async () => {
        await queue.drain();
        if (settleTimer) clearInterval(settleTimer);
        await settling;
        await producer?.close();
        await remote?.close();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          // Streams (SSE) keep connections open; end them after the drain.
          (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        });
        db.close();
      })()),
  };
}
