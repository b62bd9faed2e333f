/**
 * Many machines: jobs through BullMQ on Redis. With `cxr serve --queue redis://...` the API server
 * puts generations, trainings, evaluations and generation-batch shards on BullMQ queues (one queue
 * per kind, `JOB_QUEUES`) instead of running them itself; `cxr worker` on each GPU machine pulls
 * them and writes images, checkpoints and reports under the data root the machines share (the same
 * paths the in-process queue writes). The API keeps its SQLite record of each job as its view and
 * mirrors the BullMQ state into it (QueueEvents, and a periodic reconciliation for events missed
 * while it was down), so every route (jobs, SSE, `?wait=`, cancel) answers as without Redis.
 *
 * A worker runs one job at a time, through the same WorkQueue and runners as the server (so a
 * training on a worker yields to a generation the worker takes between two of its steps). It fetches
 * jobs by hand (BullMQ's manual processing) and renews their locks itself, so it knows at once when
 * a lock is gone: the job stops at its next step and writes nothing more (every write of a runner is
 * preceded by `ctx.guard()`, which renews the lock and checks that it still holds this worker's
 * token). A worker that dies loses its lock after the lock duration; BullMQ's stalled-job check puts
 * the job back and another worker resumes it: a generation skips the images already written, a
 * training resumes from its last checkpoint, a shard skips the items on disk.
 */
import { createRequire } from "node:module";
import { join } from "node:path";
import type { Gpu } from "@cxr/kernels";
import type { Job as BullJob, Queue, QueueEvents, Worker } from "bullmq";
import { PRIORITY } from "./app.ts";
import {
  BATCH_KIND,
  type BatchParams,
  planShards,
  SHARD_KIND,
  type ShardParams,
  ShardRunner,
  writeBatchOutputs,
} from "./batch.ts";
import { openDatabase } from "./db.ts";
import { EvaluationRunner } from "./evaluation.ts";
import { GenerationRunner, type ImageGenerator } from "./generation.ts";
import { Draining, type JobEvent, type JobRunner, QueueFull, WorkQueue } from "./queue.ts";
import { type Job, JobStore, TERMINAL_STATES } from "./store.ts";
import { TrainingRunner } from "./training.ts";

export const SHARD_QUEUE = "cxr-generation-shards";

/** The BullMQ queue of each job kind. */
export const JOB_QUEUES = {
  generation: "cxr-generations",
  training: "cxr-trainings",
  evaluation: "cxr-evaluations",
  [SHARD_KIND]: SHARD_QUEUE,
} as const;
export type RemoteKind = keyof typeof JOB_QUEUES;
export const REMOTE_KINDS = Object.keys(JOB_QUEUES) as RemoteKind[];

/** `cxr worker --kinds` names and the job kinds they stand for. */
export const WORKER_KIND_NAMES: Record<string, RemoteKind> = {
  generation: "generation",
  training: "training",
  evaluation: "evaluation",
  shard: SHARD_KIND,
};

/**
 * How long a worker's lock on a job lasts without renewal (ms). Renewal is a timer on the worker's
 * event loop, and a training's first steps block that loop while shaders compile (measured on
 * lavapipe, cold caches, 2-core machine at load average 6-10: 16.9 s for phantom-small's first steps,
 * 11.1 s for densenet-bc-phantom's; a first image of the shipped model, loading and compiling,
 * 18.7 s at load 13; packages/server/scripts/loop-block.ts), so trainings get 300 s, about 18 times
 * the longest training block measured; the others 120 s. A worker that dies is noticed after this
 * long (plus the stalled-check interval).
 */
export const DEFAULT_LOCK_MS: Record<RemoteKind, number> = {
  generation: 120_000,
  [SHARD_KIND]: 120_000,
  evaluation: 120_000,
  training: 300_000,
};

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

/** BullMQ's key prefix (default "bull"); tests give each case its own so nothing leaks between them. */
export interface RedisPlace {
  queueUrl: string;
  prefix?: string;
}

const cancelKey = (prefix: string, id: string) => `${prefix}:cxr-cancel:${id}`;

/** The code and message a worker puts in a failed job's reason: `code: message`. */
export function failureReason(code: string, message: string): string {
  return `${code}: ${message}`;
}

export function parseFailureReason(reason: string | undefined): { code: string; message: string } {
  const match = /^([a-z_]+): ([\s\S]*)$/.exec(reason ?? "");
  if (match) return { code: match[1], message: match[2] };
  return { code: "internal", message: reason || "the job failed on a worker" };
}

/** Adds shards to the Redis queue; job ids are `<batch>-<k>`, so adding a shard twice is a no-op. */
export class RedisShardProducer {
  readonly queue: Queue;
  readonly events: QueueEvents;
  readonly prefix: string;

  constructor(url: string, options: { prefix?: string } = {}) {
    const { Queue, QueueEvents } = bullmq();
    const connection = redisConnection(url);
    this.prefix = options.prefix ?? "bull";
    this.queue = new Queue(SHARD_QUEUE, { connection, prefix: this.prefix });
    this.events = new QueueEvents(SHARD_QUEUE, { connection, prefix: this.prefix });
  }

  /**
   * Cancels shards: each gets the cancel mark the workers read (a running shard stops at its next
   * step and fails as cancelled, without retries), and every shard no worker holds is removed from
   * the queue at once. Returns how many were removed.
   */
  async cancel(ids: string[]): Promise<{ removed: number; marked: number }> {
    const client = await this.queue.client;
    let removed = 0;
    for (const id of ids) {
      await client.set(cancelKey(this.prefix, id), "1", "EX", 7 * 24 * 3600);
      const state = await this.queue.getJobState(id);
      if (state === "active" || state === "completed" || state === "failed") continue;
      if ((await this.queue.remove(id)) === 1) removed++;
    }
    return { removed, marked: ids.length };
  }

  async submit(shards: ShardParams[]): Promise<string[]> {
    const jobs = await this.queue.addBulk(
      shards.map((shard, index) => ({
        name: SHARD_KIND,
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

// ---- the API server's side -------------------------------------------------------------------------

export interface RedisJobsOptions extends RedisPlace {
  /** The kinds that go to Redis (default generation, training, evaluation). */
  kinds?: readonly RemoteKind[];
  /** Where workers write a generation's images: `<imagesRoot>/<job>/<index>.png` (the server's images/). */
  imagesRoot: string;
  /** How often every unfinished Redis job is compared with BullMQ (ms; default 2000). */
  reconcileMs?: number;
  log?: (line: string) => void;
}

/**
 * The API server's Redis jobs: submits them (an SQLite record first, then the BullMQ job with the
 * same id), mirrors BullMQ's state into the record and publishes it as the job's events, and cancels.
 */
export class RedisJobs {
  readonly prefix: string;
  readonly kinds: readonly RemoteKind[];
  private readonly queues = new Map<string, Queue>();
  private readonly events: QueueEvents[] = [];
  private chain: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly work: WorkQueue,
    private readonly options: RedisJobsOptions,
  ) {
    const { Queue, QueueEvents } = bullmq();
    const connection = redisConnection(options.queueUrl);
    this.prefix = options.prefix ?? "bull";
    this.kinds = options.kinds ?? ["generation", "training", "evaluation"];
    for (const kind of this.kinds) {
      const name = JOB_QUEUES[kind];
      this.queues.set(kind, new Queue(name, { connection, prefix: this.prefix }));
      const events = new QueueEvents(name, { connection, prefix: this.prefix });
      events.on("progress", ({ jobId, data }) => this.later(() => this.progressed(jobId, data)));
      for (const type of ["active", "completed", "failed", "waiting", "stalled", "removed"] as const) {
        events.on(type, ({ jobId }: { jobId: string }) => this.later(() => this.sync(jobId)));
      }
      events.on("error", (error) => this.options.log?.(`redis events: ${(error as Error).message}`));
      this.events.push(events);
    }
  }

  private get store(): JobStore {
    return this.work.store;
  }

  handles(kind: string): boolean {
    return (this.kinds as readonly string[]).includes(kind);
  }

  /** Starts the periodic reconciliation (and runs one now: jobs that moved while the server was down). */
  async start(): Promise<void> {
    await Promise.all(this.events.map((events) => events.waitUntilReady()));
    await this.reconcile();
    this.timer = setInterval(() => this.later(() => this.reconcile()), this.options.reconcileMs ?? 2000);
    this.timer.unref();
  }

  /** Records the job (queued), then adds it to its BullMQ queue; the record fails when Redis refuses. */
  async submit(kind: RemoteKind, priority: number, params: Record<string, unknown>): Promise<Job> {
    if (this.work.draining || this.closed) throw new Draining();
    const depth = this.store.queuedCount();
    if (depth + 1 > this.work.maxQueueDepth) throw new QueueFull(depth, Math.max(1, depth));
    const job = this.store.insert({ kind, priority, params: { ...params, queue: "redis" } });
    try {
      await this.queues.get(kind)!.add(kind, params, {
        jobId: job.id,
        attempts: 3,
        backoff: { type: "fixed", delay: 1000 },
        removeOnComplete: false,
        removeOnFail: false,
      });
    } catch (error) {
      this.store.finish(job.id, "failed", {
        error: { code: "not_queued", message: "the Redis queue did not take the job" },
      });
      throw error;
    }
    this.work.announce({ type: "queued", job });
    return job;
  }

  /**
   * Cancels: marks the job in Redis (a worker stops it at its next step), and removes it from its
   * queue when no worker holds it yet (then it is cancelled at once).
   */
  async cancel(id: string): Promise<Job | null> {
    const job = this.store.get(id);
    if (!job || TERMINAL_STATES.has(job.state) || !this.handles(job.kind)) return job;
    const queue = this.queues.get(job.kind)!;
    const client = await queue.client;
    await client.set(cancelKey(this.prefix, id), "1", "EX", 7 * 24 * 3600);
    const state = await queue.getJobState(id);
    if (state !== "active" && state !== "completed" && state !== "failed" && (await queue.remove(id)) === 1) {
      this.store.finish(id, "cancelled", {
        error: { code: "cancelled", message: "cancelled before it started" },
      });
      this.work.announce({ type: "cancelled", job: this.store.get(id)! });
      return this.store.get(id);
    }
    // A worker holds it (or is finishing it): it stops at its next step; the record follows.
    this.store.flagCancel(id);
    return this.store.get(id);
  }

  /** Compares every unfinished Redis job with BullMQ. */
  async reconcile(): Promise<void> {
    for (const state of ["queued", "running"] as const) {
      for (const job of this.store.list({ state, limit: 10_000 })) {
        if (job.params.queue === "redis" && this.handles(job.kind)) await this.sync(job.id);
      }
    }
  }

  private later(task: () => Promise<void>): void {
    this.chain = this.chain
      .then(task)
      .catch((error) => this.options.log?.(`redis mirror: ${(error as Error).stack ?? error}`));
  }

  private emit(event: JobEvent): void {
    this.work.announce(event);
  }

  /** Running, with `attempts` (BullMQ's count of starts; null: one more than recorded when it was queued). */
  private started(record: Job, attempts: number | null): Job {
    if (record.state === "running" && attempts === null) return record;
    if (this.store.markRunning(record.id, attempts ?? record.attempts + 1)) {
      const job = this.store.get(record.id)!;
      this.emit({ type: "started", job });
      return job;
    }
    return this.store.get(record.id) ?? record;
  }

  private async progressed(id: string, data: unknown): Promise<void> {
    let record = this.store.get(id);
    if (!record || TERMINAL_STATES.has(record.state) || !this.handles(record.kind)) return;
    const progress = data as { step?: unknown; total?: unknown };
    if (typeof progress?.step !== "number" || typeof progress.total !== "number") return;
    record = this.started(record, null);
    if (record.progress && record.progress.step === progress.step && record.state === "running") return;
    const value = data as NonNullable<Job["progress"]>;
    this.store.setProgress(id, value);
    this.emit({ type: "progress", job: this.store.get(id)!, progress: value });
  }

  /** Brings one record to its BullMQ job's state, publishing the events of the transition. */
  async sync(id: string): Promise<void> {
    const record = this.store.get(id);
    if (!record || TERMINAL_STATES.has(record.state) || !this.handles(record.kind)) return;
    const queue = this.queues.get(record.kind)!;
    // The state first, then the job: a job read just before it completes carries no return value or
    // failure reason, so reading the job first and its state second could record a completed job
    // with an empty result (seen under load: an evaluation succeeded without its macroAuroc). Read
    // in this order, a job that completes in between is seen as still active, and its completed
    // event brings it here again.
    const state = await queue.getJobState(id);
    const bull = await queue.getJob(id);
    if (!bull) {
      // Removed from Redis: a cancel that removed it, or Redis lost it (it was not persisted).
      const cancelled = record.cancelRequested;
      this.store.finish(id, cancelled ? "cancelled" : "failed", {
        error: cancelled
          ? { code: "cancelled", message: "cancelled before it started" }
          : { code: "lost_in_queue", message: "the job is no longer in the Redis queue" },
      });
      this.emit({ type: cancelled ? "cancelled" : "failed", job: this.store.get(id)! });
      return;
    }
    const attempts = Math.max(1, bull.attemptsStarted ?? bull.attemptsMade + 1);
    if (state === "active") {
      const job = this.started(record, attempts);
      if (bull.progress && typeof bull.progress === "object") await this.progressed(job.id, bull.progress);
      return;
    }
    if (state === "completed") {
      const value = (bull.returnvalue ?? {}) as { result?: Record<string, unknown>; profile?: unknown[] };
      const result = value.result ?? {};
      this.started(record, attempts);
      if (record.kind === "generation") {
        const images = (result.images ?? []) as { index: number; seed: number }[];
        const folder = join(this.options.imagesRoot, id);
        for (const image of images) {
          this.store.addImage({
            jobId: id,
            index: image.index,
            seed: image.seed,
            path: join(folder, `${image.index}.png`),
            sidecarPath: join(folder, `${image.index}.json`),
          });
        }
      }
      if (value.profile) this.store.saveProfile(id, value.profile);
      this.store.finish(id, "succeeded", { result });
      this.emit({ type: "done", job: this.store.get(id)! });
      return;
    }
    if (state === "failed") {
      const error = parseFailureReason(bull.failedReason);
      const cancelled = error.code === "cancelled";
      this.store.finish(id, cancelled ? "cancelled" : "failed", { error });
      this.emit({ type: cancelled ? "cancelled" : "failed", job: this.store.get(id)! });
      return;
    }
    // Waiting again (a worker died or drained; another one resumes it): queued, as after a restart.
    if (record.state === "running") this.store.requeue(id);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.chain;
    await Promise.all(this.events.map((events) => events.close()));
    await Promise.all([...this.queues.values()].map((queue) => queue.close()));
  }
}

// ---- the worker's side -----------------------------------------------------------------------------

export interface JobWorkerOptions extends RedisPlace {
  /** Job kinds to take (default all of REMOTE_KINDS). */
  kinds?: readonly RemoteKind[];
  /** The data root shared with the API server: images/, trainings/, evaluations/ (not for shards). */
  dataRoot?: string;
  datasetsRoot: string;
  /** Where finished trainings are published (the API server's models root). */
  modelsRoot?: string;
  generator: ImageGenerator;
  /** The device trainings run on (default: @cxr/kernels' defaultGpu). */
  gpu?: () => Promise<Gpu>;
  /** Lock duration per kind (ms), DEFAULT_LOCK_MS otherwise. */
  lockDurationMs?: Partial<Record<RemoteKind, number>>;
  /** How often this worker looks for jobs whose worker died (ms). Default 15,000. */
  stalledIntervalMs?: number;
  /** How often an idle worker looks for a job (ms). Default 250. */
  pollMs?: number;
  /** Called after each shard item is written (made) or found on disk (skipped). */
  onItem?: (event: { shard: string; path: string; made: boolean }) => void;
  log?: (line: string) => void;
}

interface Held {
  bull: BullJob;
  token: string;
  kind: RemoteKind;
  lockMs: number;
  /** BullMQ calls of this job, in order (progress updates, then the outcome). */
  chain: Promise<unknown>;
}

export interface RunningWorker {
  /** This worker's local queue (a scratch in-memory store of the jobs it holds). */
  readonly queue: WorkQueue;
  readonly workers: Worker[];
  /**
   * Stops taking jobs; the running one stops at its next step (a training writes its checkpoint
   * first) and goes back to its queue for another worker.
   */
  close(): Promise<void>;
}

/** Takes jobs of `kinds` from Redis, one at a time (a higher-priority one between two steps), until `close()`. */
export async function startJobWorker(options: JobWorkerOptions): Promise<RunningWorker> {
  const { Worker, UnrecoverableError } = bullmq();
  const log = options.log ?? ((line: string) => process.stderr.write(`[cxr worker] ${line}\n`));
  const kinds = options.kinds ?? REMOTE_KINDS;
  const prefix = options.prefix ?? "bull";
  const connection = redisConnection(options.queueUrl);
  const lockMs = (kind: RemoteKind) => options.lockDurationMs?.[kind] ?? DEFAULT_LOCK_MS[kind];
  const needsDataRoot = kinds.some((kind) => kind !== SHARD_KIND);
  if (needsDataRoot && !options.dataRoot)
    throw new Error("a worker of generations, trainings or evaluations needs dataRoot");
  const dataRoot = options.dataRoot ?? "";
  const runners: JobRunner[] = [];
  for (const kind of kinds) {
    if (kind === "generation")
      runners.push(new GenerationRunner(options.generator, join(dataRoot, "images")));
    if (kind === SHARD_KIND)
      runners.push(new ShardRunner(options.generator, options.datasetsRoot, options.onItem));
    if (kind === "evaluation")
      runners.push(new EvaluationRunner(options.datasetsRoot, join(dataRoot, "evaluations")));
    if (kind === "training") {
      runners.push(
        new TrainingRunner({
          datasetsRoot: options.datasetsRoot,
          modelsRoot: options.modelsRoot ?? join(dataRoot, "models"),
          trainingsRoot: join(dataRoot, "trainings"),
          gpu: options.gpu,
          log,
        }),
      );
    }
  }
  const held = new Map<string, Held>();
  const store = new JobStore(openDatabase(":memory:"));
  /** Renews the lock; false when it is gone or held by another worker's token. */
  const renew = async (entry: Held): Promise<boolean> => {
    try {
      return (await entry.bull.extendLock(entry.token, entry.lockMs)) === 1;
    } catch (error) {
      log(`job ${entry.bull.id}: lock renewal failed: ${(error as Error).message}`);
      return false;
    }
  };
  const local = new WorkQueue(store, runners, {
    maxQueueDepth: 1_000_000,
    log,
    holds: async (job) => {
      const entry = held.get(job.id);
      if (entry && (await renew(entry))) return true;
      log(`job ${job.id}: this worker's lock is gone (another worker holds the job); stopping it`);
      return false;
    },
  });
  const workers = new Map<RemoteKind, Worker>();
  for (const kind of kinds) {
    const worker = new Worker(JOB_QUEUES[kind], null, {
      connection,
      prefix,
      autorun: false,
      concurrency: 1,
      lockDuration: lockMs(kind),
      stalledInterval: options.stalledIntervalMs ?? 15_000,
      maxStalledCount: 5,
    });
    worker.on("error", (error) => log(`${JOB_QUEUES[kind]}: ${error.message}`));
    workers.set(kind, worker);
  }
  for (const worker of workers.values()) await worker.startStalledCheckTimer();
  const client = await [...workers.values()][0].client;

  const settle = (id: string, outcome: (entry: Held) => Promise<unknown>) => {
    const entry = held.get(id);
    if (!entry) return;
    held.delete(id);
    entry.chain = entry.chain
      .then(() => outcome(entry))
      .catch((error) => log(`job ${id}: ${(error as Error).message}`))
      .finally(() => store.remove(id));
  };
  local.subscribeAll((event) => {
    const entry = held.get(event.job.id);
    if (!entry) return;
    const job = store.get(event.job.id) ?? event.job;
    if (event.type === "progress") {
      entry.chain = entry.chain
        .then(() => entry.bull.updateProgress({ ...event.progress }))
        .catch((error) => log(`job ${job.id}: progress not sent: ${(error as Error).message}`));
    } else if (event.type === "done") {
      const profile = store.profile(job.id);
      settle(job.id, (held) =>
        held.bull.moveToCompleted({ result: job.result, ...(profile ? { profile } : {}) }, held.token, false),
      );
      log(`job ${job.id} (${job.kind}) done`);
    } else if (event.type === "failed" || event.type === "cancelled") {
      const error = job.error ?? { code: "internal", message: "the job failed" };
      if (error.code === "lost") {
        // Another worker holds it now: leave its BullMQ state alone.
        held.delete(job.id);
        entry.chain.finally(() => store.remove(job.id));
        return;
      }
      const reason = failureReason(event.type === "cancelled" ? "cancelled" : error.code, error.message);
      // Bad input and cancels are final; anything else may succeed on another attempt.
      const final = event.type === "cancelled" || error.code !== "internal";
      settle(job.id, (held) =>
        held.bull.moveToFailed(final ? new UnrecoverableError(reason) : new Error(reason), held.token, false),
      );
      log(`job ${job.id} (${job.kind}) ${event.type}: ${reason}`);
    }
  });

  const cancelRequested = async (id: string) => (await client.get(cancelKey(prefix, id))) !== null;
  const lose = (id: string) => {
    log(`job ${id}: this worker's lock is gone (another worker holds the job); stopping it`);
    local.lose(id);
  };
  // Renews every held job's lock well before it expires.
  const renewEvery = Math.max(200, Math.min(...kinds.map(lockMs)) / 4);
  let renewing = false;
  const renewTimer = setInterval(async () => {
    if (renewing) return;
    renewing = true;
    try {
      for (const [id, entry] of held) if (!(await renew(entry))) lose(id);
    } catch (error) {
      log(`lock renewal: ${(error as Error).message}`);
    } finally {
      renewing = false;
    }
  }, renewEvery);
  // Picks up cancels (the API's mark) every second: the job stops at its next step.
  let polling = false;
  const cancelTimer = setInterval(async () => {
    if (polling) return;
    polling = true;
    try {
      for (const id of held.keys()) if (await cancelRequested(id)) local.cancel(id);
    } catch (error) {
      log(`cancel marks: ${(error as Error).message}`);
    } finally {
      polling = false;
    }
  }, 1000);

  const order = [...kinds].sort((a, b) => PRIORITY_OF[b] - PRIORITY_OF[a]);
  const workerId = `${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  let stopping = false;
  let tokens = 0;
  const take = async (kind: RemoteKind): Promise<boolean> => {
    const token = `${workerId}:${tokens++}`;
    const bull = (await workers.get(kind)!.getNextJob(token, { block: false })) as BullJob | undefined;
    if (!bull?.id) return false;
    const entry: Held = { bull, token, kind, lockMs: lockMs(kind), chain: Promise.resolve() };
    held.set(bull.id, entry);
    store.remove(bull.id);
    log(`job ${bull.id} (${kind}) taken, attempt ${bull.attemptsStarted ?? bull.attemptsMade + 1}`);
    local.submit([{ id: bull.id, kind, priority: PRIORITY_OF[kind], params: bull.data }]);
    if (await cancelRequested(bull.id)) local.cancel(bull.id);
    return true;
  };
  const feeding = (async () => {
    while (!stopping) {
      try {
        if (store.queuedCount() === 0) {
          const running = local.runningPriorities();
          const floor = running.length > 0 ? Math.max(...running) : Number.NEGATIVE_INFINITY;
          for (const kind of order) {
            if (PRIORITY_OF[kind] <= floor) continue;
            if (await take(kind)) break;
          }
        }
      } catch (error) {
        if (!stopping) log(`fetching jobs: ${(error as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 250));
    }
  })();
  local.start();
  let closing: Promise<void> | null = null;
  return {
    queue: local,
    workers: [...workers.values()],
    close: () =>
      (closing ??= (async () => {
        stopping = true;
        await feeding;
        await local.drain();
        clearInterval(renewTimer);
        clearInterval(cancelTimer);
        // Jobs interrupted by the drain (or never started) go back to their queue for another worker.
        for (const [id, entry] of held) {
          held.delete(id);
          await entry.chain.catch(() => undefined);
          await entry.bull
            .moveToWait(entry.token)
            .catch((error: Error) => log(`job ${id}: ${error.message}`));
          log(`job ${id} back in its queue`);
        }
        for (const worker of workers.values()) await worker.close();
      })()),
  };
}

const PRIORITY_OF: Record<RemoteKind, number> = {
  generation: PRIORITY.generation,
  [SHARD_KIND]: PRIORITY.shard,
  evaluation: PRIORITY.shard,
  training: PRIORITY.training,
};

/** A worker of generation shards only (what `cxr worker` did before it took every kind). */
export function startShardWorker(
  options: Omit<JobWorkerOptions, "kinds" | "lockDurationMs"> & { lockDurationMs?: number },
): Promise<RunningWorker> {
  return startJobWorker({
    ...options,
    kinds: [SHARD_KIND],
    lockDurationMs: options.lockDurationMs ? { [SHARD_KIND]: options.lockDurationMs } : undefined,
  });
}

/**
 * Settles batches whose shards went to Redis: when every shard (`<batch>-<k>`) has completed, writes
 * train.csv and manifest.json and marks the batch succeeded; a shard failed for good fails it; a
 * cancelled batch ends cancelled once none of its shards waits or runs.
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
    if (batch.cancelRequested) {
      // Cancelled: settles once no shard waits or runs (removed shards read "unknown").
      if (states.some((state) => state !== "completed" && state !== "failed" && state !== "unknown"))
        continue;
      const completed = states.filter((state) => state === "completed").length;
      store.finish(batch.id, "cancelled", {
        error: {
          code: "cancelled",
          message: `cancelled; ${completed} of ${ids.length} shards had completed (their images stay on disk)`,
        },
      });
      queue.announce({ type: "cancelled", job: store.get(batch.id)! });
      continue;
    }
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
