/**
 * One GPU work queue per process. A single loop takes the next job (highest priority first) and
 * runs it; runners call `ctx.step()` between steps, which reports progress, stops a cancelled job,
 * interrupts everything on drain, and runs any queued job of higher priority (interactive
 * generation) right there, so a long training pauses between two steps instead of making a
 * generation request wait for it to end.
 */
import { EventEmitter } from "node:events";
import type { Job, JobError, JobProgress, JobStore } from "./store.ts";

/**
 * Thrown by `ctx.step()`: the job was cancelled, the server is draining, or (a Redis worker) this
 * process lost the job to another worker and must stop without writing anything more.
 */
export class JobInterrupted extends Error {
  constructor(readonly reason: "cancelled" | "draining" | "lost") {
    super(
      reason === "cancelled"
        ? "the job was cancelled"
        : reason === "draining"
          ? "the server is shutting down"
          : "another worker took the job over",
    );
    this.name = "JobInterrupted";
  }
}

/** An error a runner raises for bad job input: shown to the client as is (code and message). */
export class JobFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "JobFailure";
  }
}

export interface JobContext {
  readonly job: Job;
  readonly store: JobStore;
  /**
   * Call between steps (`step` done out of `total`). Records progress with an ETA, throws
   * JobInterrupted when the job was cancelled or the server drains, and first runs queued jobs of
   * higher priority than this one.
   */
  step(step: number, total: number, message?: string): Promise<void>;
  /** Throws JobInterrupted when the job was cancelled or the server drains (synchronous; for step hooks). */
  check(): void;
  /** Records progress only (for synchronous progress callbacks); `step` does this too. */
  progress(step: number, total: number, message?: string): void;
  /**
   * Aborted when the job should stop at its next step boundary: it was cancelled, the server drains,
   * or a job of higher priority is waiting. For runners whose step loop is a library call that takes
   * a signal (trainDiffusion): stop it, then call `step()` (which throws or runs the waiting jobs),
   * then continue (resume). Renewed by each `step()` call.
   */
  readonly preempt: AbortSignal;
  /** True once a drain began: a training saves its checkpoint before `step` throws. */
  readonly draining: boolean;
  /**
   * Await before writing a result that another process could also write (an image, a checkpoint,
   * loss rows): throws JobInterrupted("lost") when this process no longer holds the job (a Redis
   * worker whose lock went to another worker). Resolves at once in the in-process queue.
   */
  guard(): Promise<void>;
}

export interface JobOutcome {
  result: Record<string, unknown>;
  /** Per-kernel GPU time of the job (the profiler's rows), for /v1/profile. */
  profile?: unknown[];
}

/** Runs the jobs of some kinds. The server wires the real generator and trainers in; tests may add their own. */
export interface JobRunner {
  readonly kinds: readonly string[];
  run(ctx: JobContext): Promise<JobOutcome>;
}

export type JobEvent =
  | { type: "queued"; job: Job }
  | { type: "started"; job: Job }
  | { type: "progress"; job: Job; progress: JobProgress }
  | { type: "done"; job: Job }
  | { type: "failed"; job: Job }
  | { type: "cancelled"; job: Job };

export class QueueFull extends Error {
  constructor(
    readonly depth: number,
    readonly retryAfterSeconds: number,
  ) {
    super(`the queue holds ${depth} jobs, its limit`);
  }
}

export class Draining extends Error {
  constructor() {
    super("the server is shutting down and takes no new work");
  }
}

export interface WorkQueueOptions {
  maxQueueDepth: number;
  /**
   * Whether this process still holds the job (a Redis worker renews and checks its lock here); when
   * it resolves false, `ctx.guard()` throws JobInterrupted("lost"). Default: always held.
   */
  holds?: (job: Job) => Promise<boolean>;
  /** Logs a line (never a token or a request body). */
  log?: (line: string) => void;
}

export class WorkQueue {
  private readonly runners = new Map<string, JobRunner>();
  private readonly emitter = new EventEmitter();
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;
  private stopping = false;
  private drainingFlag = false;
  private readonly running = new Map<
    string,
    { started: number; priority: number; preempt: AbortController; cancelled: boolean; lost: boolean }
  >();
  /** Recent step durations, for Retry-After. */
  private jobSeconds = 1;

  constructor(
    readonly store: JobStore,
    runners: readonly JobRunner[],
    private readonly options: WorkQueueOptions,
  ) {
    for (const runner of runners) for (const kind of runner.kinds) this.runners.set(kind, runner);
    this.emitter.setMaxListeners(0);
  }

  get maxQueueDepth(): number {
    return this.options.maxQueueDepth;
  }

  get kinds(): string[] {
    return [...this.runners.keys()];
  }

  get draining(): boolean {
    return this.drainingFlag;
  }

  /** Puts jobs left running by a crash back in the queue and starts the loop. */
  start(): void {
    const requeued = this.store.requeueRunning(this.kinds);
    if (requeued > 0) this.options.log?.(`requeued ${requeued} interrupted job(s)`);
    this.loop = this.runLoop();
  }

  /** Adds jobs (all or none); refuses when draining or when the queue is full. */
  submit(
    jobs: {
      id?: string;
      kind: string;
      priority: number;
      params: Record<string, unknown>;
      parentId?: string | null;
    }[],
  ): Job[] {
    if (this.drainingFlag || this.stopping) throw new Draining();
    for (const job of jobs) {
      if (!this.runners.has(job.kind)) throw new Error(`no runner for jobs of kind ${job.kind}`);
    }
    const depth = this.store.queuedCount();
    if (depth + jobs.length > this.options.maxQueueDepth) {
      throw new QueueFull(depth, Math.max(1, Math.ceil(this.jobSeconds * Math.max(1, depth))));
    }
    const created = this.store.insertMany(jobs);
    const top = Math.max(...jobs.map((job) => job.priority));
    for (const entry of this.running.values()) if (entry.priority < top) entry.preempt.abort();
    for (const job of created) this.emit({ type: "queued", job });
    this.nudge();
    return created;
  }

  cancel(id: string): Job | null {
    const job = this.store.requestCancel(id);
    const running = this.running.get(id);
    if (running) {
      running.cancelled = true;
      running.preempt.abort();
    }
    if (job?.state === "cancelled" && !this.running.has(id)) this.emit({ type: "cancelled", job });
    return job;
  }

  /**
   * This process lost a running job (a Redis worker's lock went to another worker): it stops at its
   * next step, writes nothing more (`ctx.guard()` throws) and ends as failed with code "lost".
   */
  lose(id: string): void {
    const running = this.running.get(id);
    if (running) {
      running.lost = true;
      running.preempt.abort();
      return;
    }
    if (this.store.get(id)?.state === "queued") {
      this.store.finish(id, "failed", {
        error: { code: "lost", message: "another worker took the job over" },
      });
      this.emit({ type: "failed", job: this.store.get(id)! });
    }
  }

  /** The priorities of the jobs running now (the outer one and any it let run between its steps). */
  runningPriorities(): number[] {
    return [...this.running.values()].map((entry) => entry.priority);
  }

  subscribe(jobId: string, listener: (event: JobEvent) => void): () => void {
    this.emitter.on(jobId, listener);
    return () => this.emitter.off(jobId, listener);
  }

  /** Any job's events (metrics, logs). */
  subscribeAll(listener: (event: JobEvent) => void): () => void {
    this.emitter.on("*", listener);
    return () => this.emitter.off("*", listener);
  }

  /**
   * Stops taking work: the running job is interrupted at its next step (a training saves its
   * checkpoint first) and goes back to the queue, to resume on the next start. Resolves when the
   * loop has stopped.
   */
  async drain(): Promise<void> {
    this.drainingFlag = true;
    this.stopping = true;
    for (const entry of this.running.values()) entry.preempt.abort();
    this.nudge();
    await this.loop;
  }

  /** Publishes an event of a job that no runner runs (a batch record settling). */
  announce(event: JobEvent): void {
    this.emit(event);
  }

  private emit(event: JobEvent): void {
    this.emitter.emit(event.job.id, event);
    this.emitter.emit("*", event);
  }

  private nudge(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private async runLoop(): Promise<void> {
    while (!this.stopping) {
      const job = this.store.claimNext(this.kinds);
      if (!job) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        continue;
      }
      await this.runJob(job);
    }
  }

  private async runJob(job: Job): Promise<void> {
    const runner = this.runners.get(job.kind)!;
    const started = Date.now();
    const entry = {
      started,
      priority: job.priority,
      preempt: new AbortController(),
      cancelled: false,
      lost: false,
    };
    this.running.set(job.id, entry);
    this.emit({ type: "started", job });
    let firstStepAt: number | null = null;
    let firstStep = 0;
    const queue = this;
    const ctx: JobContext = {
      job,
      store: this.store,
      get draining() {
        return queue.drainingFlag;
      },
      get preempt() {
        return entry.preempt.signal;
      },
      progress: (step, total, message) => record(step, total, message),
      guard: async () => {
        if (!entry.lost && this.options.holds && !(await this.options.holds(job))) entry.lost = true;
        if (entry.lost) throw new JobInterrupted("lost");
      },
      check: () => {
        if (entry.lost) throw new JobInterrupted("lost");
        if (entry.cancelled || this.store.get(job.id)?.cancelRequested) throw new JobInterrupted("cancelled");
        if (this.drainingFlag) throw new JobInterrupted("draining");
      },
      step: async (step, total, message) => {
        record(step, total, message);
        ctx.check();
        // Interactive work first: run higher-priority jobs now, between two of this job's steps.
        for (;;) {
          const urgent = this.store.claimNext(this.kinds, job.priority + 1);
          if (!urgent) break;
          await this.runJob(urgent);
          if (this.drainingFlag) throw new JobInterrupted("draining");
        }
        if (entry.preempt.signal.aborted) entry.preempt = new AbortController();
        // Let the event loop answer requests between steps.
        await new Promise<void>((resolve) => setImmediate(resolve));
      },
    };
    function record(step: number, total: number, message?: string) {
      const now = Date.now();
      if (firstStepAt === null) {
        firstStepAt = now;
        firstStep = step;
      }
      const rate = step > firstStep ? (now - firstStepAt) / (step - firstStep) : null;
      const progress: JobProgress = {
        step,
        total,
        etaSeconds: rate === null ? null : Math.max(0, ((total - step) * rate) / 1000),
        ...(message ? { message } : {}),
      };
      queue.store.setProgress(job.id, progress);
      queue.emit({ type: "progress", job, progress });
    }
    try {
      const outcome = await runner.run(ctx);
      if (outcome.profile) this.store.saveProfile(job.id, outcome.profile);
      this.store.finish(job.id, "succeeded", { result: outcome.result });
      this.emit({ type: "done", job: this.store.get(job.id)! });
    } catch (error) {
      if (entry.lost || (error instanceof JobInterrupted && error.reason === "lost")) {
        // Nothing more is written: the worker that took the job over finishes it.
        this.options.log?.(`job ${job.id} (${job.kind}): another worker took it over; this copy stopped`);
        this.store.finish(job.id, "failed", {
          error: { code: "lost", message: "another worker took the job over" },
        });
        this.emit({ type: "failed", job: this.store.get(job.id)! });
      } else if (error instanceof JobInterrupted && error.reason === "draining") {
        this.store.requeue(job.id);
        this.options.log?.(`job ${job.id} interrupted by the drain; it resumes on the next start`);
      } else if (error instanceof JobInterrupted) {
        this.store.finish(job.id, "cancelled", { error: { code: "cancelled", message: error.message } });
        this.emit({ type: "cancelled", job: this.store.get(job.id)! });
      } else {
        const failure: JobError =
          error instanceof JobFailure
            ? { code: error.code, message: error.message }
            : { code: "internal", message: "the job failed; the server log has the details" };
        this.options.log?.(`job ${job.id} (${job.kind}) failed: ${(error as Error)?.stack ?? String(error)}`);
        this.store.finish(job.id, "failed", { error: failure });
        this.emit({ type: "failed", job: this.store.get(job.id)! });
      }
    } finally {
      this.running.delete(job.id);
      this.jobSeconds = 0.8 * this.jobSeconds + 0.2 * ((Date.now() - started) / 1000);
    }
  }
}
