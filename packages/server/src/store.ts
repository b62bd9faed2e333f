/**
 * The durable job table. A job is a kind (what runs it), JSON parameters, a priority and a state;
 * a generation writes one row per image, keyed (job, index), so a job re-run after a crash skips
 * the images it already has and can never write one twice. Shards of a batch are ordinary jobs
 * with a parent, which is how the synthetic-dataset builder can submit its own shards later.
 */
import { randomBytes } from "node:crypto";
import type { SqlDatabase } from "./db.ts";

export const JOB_STATES = ["queued", "running", "succeeded", "failed", "cancelled"] as const;
export type JobState = (typeof JOB_STATES)[number];
export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(["succeeded", "failed", "cancelled"]);

export interface JobProgress {
  step: number;
  total: number;
  /** Seconds left at the pace so far, or null before the first step. */
  etaSeconds: number | null;
  message?: string;
}

export interface JobError {
  code: string;
  message: string;
}

export interface Job {
  id: string;
  kind: string;
  state: JobState;
  priority: number;
  params: Record<string, unknown>;
  progress: JobProgress | null;
  result: Record<string, unknown> | null;
  error: JobError | null;
  parentId: string | null;
  attempts: number;
  cancelRequested: boolean;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
}

export interface ImageRecord {
  id: string;
  jobId: string;
  index: number;
  seed: number;
  path: string;
  sidecarPath: string;
  createdAt: number;
}

interface JobRow {
  id: string;
  kind: string;
  state: JobState;
  priority: number;
  params: string;
  progress: string | null;
  result: string | null;
  error: string | null;
  parent_id: string | null;
  attempts: number;
  cancel_requested: number;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

interface ImageRow {
  id: string;
  job_id: string;
  idx: number;
  seed: number;
  path: string;
  sidecar_path: string;
  created_at: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  state TEXT NOT NULL,
  priority INTEGER NOT NULL,
  params TEXT NOT NULL,
  progress TEXT,
  result TEXT,
  error TEXT,
  parent_id TEXT REFERENCES jobs(id),
  attempts INTEGER NOT NULL DEFAULT 0,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(state, priority DESC, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_parent ON jobs(parent_id);
CREATE TABLE IF NOT EXISTS images (
  id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES jobs(id),
  idx INTEGER NOT NULL,
  seed INTEGER NOT NULL,
  path TEXT NOT NULL,
  sidecar_path TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (job_id, idx)
);
CREATE TABLE IF NOT EXISTS profiles (
  job_id TEXT PRIMARY KEY REFERENCES jobs(id),
  rows TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
`;

let lastMs = 0;
let sequence = 0;

/**
 * Time-ordered ids: `job_` + 12 hex digits of milliseconds + 8 hex digits of a sequence that starts
 * at a random value each millisecond and counts up, so jobs created together (a batch's shards)
 * sort, and run, in the order they were made.
 */
export function newJobId(now = Date.now()): string {
  if (now > lastMs) {
    lastMs = now;
    sequence = randomBytes(4).readUInt32BE(0) >>> 1;
  } else {
    sequence++;
  }
  return `job_${lastMs.toString(16).padStart(12, "0")}${(sequence >>> 0).toString(16).padStart(8, "0")}`;
}

export function imageId(jobId: string, index: number): string {
  return `img_${jobId.slice(4)}_${index}`;
}

const parse = <T>(text: string | null): T | null => (text === null ? null : (JSON.parse(text) as T));

function toJob(row: JobRow): Job {
  return {
    id: row.id,
    kind: row.kind,
    state: row.state,
    priority: row.priority,
    params: JSON.parse(row.params),
    progress: parse<JobProgress>(row.progress),
    result: parse<Record<string, unknown>>(row.result),
    error: parse<JobError>(row.error),
    parentId: row.parent_id,
    attempts: row.attempts,
    cancelRequested: row.cancel_requested !== 0,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
  };
}

function toImage(row: ImageRow): ImageRecord {
  return {
    id: row.id,
    jobId: row.job_id,
    index: row.idx,
    seed: row.seed,
    path: row.path,
    sidecarPath: row.sidecar_path,
    createdAt: row.created_at,
  };
}

export interface NewJob {
  /** Default: a new time-ordered id. A worker's local record takes the id the API gave the job. */
  id?: string;
  kind: string;
  priority: number;
  params: Record<string, unknown>;
  parentId?: string | null;
  /** Default "queued"; a record that no runner takes (a batch) starts "running". */
  state?: "queued" | "running";
}

export class JobStore {
  constructor(readonly db: SqlDatabase) {
    db.exec(SCHEMA);
  }

  insert(job: NewJob, now = Date.now()): Job {
    const id = job.id ?? newJobId(now);
    this.db.run(
      "INSERT INTO jobs (id, kind, state, priority, params, parent_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
      id,
      job.kind,
      job.state ?? "queued",
      job.priority,
      JSON.stringify(job.params),
      job.parentId ?? null,
      now,
    );
    return this.get(id)!;
  }

  /** Inserts several jobs in one transaction (a batch and its shards): all or none. */
  insertMany(jobs: NewJob[]): Job[] {
    return this.db.transaction(() => jobs.map((job) => this.insert(job)));
  }

  get(id: string): Job | null {
    const row = this.db.get<JobRow>("SELECT * FROM jobs WHERE id = ?", id);
    return row ? toJob(row) : null;
  }

  list(options: {
    state?: JobState;
    kind?: string;
    parentId?: string;
    limit: number;
    before?: string;
  }): Job[] {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (options.state) where.push("state = ?") && params.push(options.state);
    if (options.kind) where.push("kind = ?") && params.push(options.kind);
    if (options.parentId) where.push("parent_id = ?") && params.push(options.parentId);
    if (options.before) where.push("id < ?") && params.push(options.before);
    const clause = where.length ? `WHERE ${where.join(" AND ")}` : "";
    params.push(options.limit);
    return this.db.all<JobRow>(`SELECT * FROM jobs ${clause} ORDER BY id DESC LIMIT ?`, ...params).map(toJob);
  }

  countByState(): Record<JobState, number> {
    const counts = Object.fromEntries(JOB_STATES.map((state) => [state, 0])) as Record<JobState, number>;
    for (const row of this.db.all<{ state: JobState; n: number }>(
      "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state",
    )) {
      counts[row.state] = Number(row.n);
    }
    return counts;
  }

  /** Jobs waiting to run (the queue depth), optionally only those of at least `minPriority`. */
  queuedCount(minPriority = Number.MIN_SAFE_INTEGER, kinds?: readonly string[]): number {
    const kindClause = kinds ? ` AND kind IN (${kinds.map(() => "?").join(", ")})` : "";
    const row = this.db.get<{ n: number }>(
      `SELECT COUNT(*) AS n FROM jobs WHERE state = 'queued' AND priority >= ?${kindClause}`,
      minPriority,
      ...(kinds ?? []),
    );
    return Number(row?.n ?? 0);
  }

  /**
   * Takes the next queued job (highest priority, then oldest) of one of `kinds`, marks it running
   * and counts the attempt, in one transaction.
   */
  claimNext(kinds: readonly string[], minPriority = Number.MIN_SAFE_INTEGER, now = Date.now()): Job | null {
    if (kinds.length === 0) return null;
    return this.db.transaction(() => {
      const row = this.db.get<JobRow>(
        `SELECT * FROM jobs WHERE state = 'queued' AND priority >= ? AND kind IN (${kinds.map(() => "?").join(", ")})
         ORDER BY priority DESC, created_at, id LIMIT 1`,
        minPriority,
        ...kinds,
      );
      if (!row) return null;
      this.db.run(
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = COALESCE(started_at, ?) WHERE id = ?",
        now,
        row.id,
      );
      return this.get(row.id);
    });
  }

  /** After a crash: every job left running goes back to the queue (it resumes from what it wrote). */
  requeueRunning(kinds: readonly string[]): number {
    if (kinds.length === 0) return 0;
    return this.db.run(
      `UPDATE jobs SET state = 'queued', progress = NULL WHERE state = 'running' AND kind IN (${kinds.map(() => "?").join(", ")})`,
      ...kinds,
    ).changes;
  }

  /**
   * A job that runs elsewhere (a Redis worker) started: running, with the attempts the queue counted
   * (a running one takes the larger count). Returns true only when it went from queued to running.
   */
  markRunning(id: string, attempts: number, now = Date.now()): boolean {
    this.db.run(
      "UPDATE jobs SET attempts = MAX(attempts, ?) WHERE id = ? AND state = 'running'",
      attempts,
      id,
    );
    return (
      this.db.run(
        "UPDATE jobs SET state = 'running', attempts = MAX(attempts, ?), started_at = COALESCE(started_at, ?) WHERE id = ? AND state = 'queued'",
        attempts,
        now,
        id,
      ).changes > 0
    );
  }

  /** Back to the queue without counting as finished (a drain interrupted it). */
  requeue(id: string): void {
    this.db.run("UPDATE jobs SET state = 'queued' WHERE id = ? AND state = 'running'", id);
  }

  setProgress(id: string, progress: JobProgress): void {
    this.db.run("UPDATE jobs SET progress = ? WHERE id = ?", JSON.stringify(progress), id);
  }

  finish(
    id: string,
    state: "succeeded" | "failed" | "cancelled",
    outcome: { result?: Record<string, unknown>; error?: JobError },
    now = Date.now(),
  ): void {
    this.db.run(
      "UPDATE jobs SET state = ?, result = ?, error = ?, finished_at = ? WHERE id = ?",
      state,
      outcome.result ? JSON.stringify(outcome.result) : null,
      outcome.error ? JSON.stringify(outcome.error) : null,
      now,
      id,
    );
  }

  /** Cancels a queued job at once; marks a running one so that it stops at its next step. */
  requestCancel(id: string, now = Date.now()): Job | null {
    return this.db.transaction(() => {
      const job = this.get(id);
      if (!job) return null;
      if (job.state === "queued") {
        this.finish(
          id,
          "cancelled",
          { error: { code: "cancelled", message: "cancelled before it started" } },
          now,
        );
      } else if (job.state === "running") {
        this.db.run("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", id);
      }
      return this.get(id);
    });
  }

  /** Marks a job whose runner is elsewhere (a Redis worker) as asked to stop, whatever its state here. */
  flagCancel(id: string): void {
    this.db.run("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", id);
  }

  addImage(image: Omit<ImageRecord, "id" | "createdAt">, now = Date.now()): ImageRecord {
    const id = imageId(image.jobId, image.index);
    this.db.run(
      `INSERT INTO images (id, job_id, idx, seed, path, sidecar_path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (job_id, idx) DO UPDATE SET path = excluded.path, sidecar_path = excluded.sidecar_path`,
      id,
      image.jobId,
      image.index,
      image.seed,
      image.path,
      image.sidecarPath,
      now,
    );
    return this.image(id)!;
  }

  image(id: string): ImageRecord | null {
    const row = this.db.get<ImageRow>("SELECT * FROM images WHERE id = ?", id);
    return row ? toImage(row) : null;
  }

  images(jobId: string): ImageRecord[] {
    return this.db.all<ImageRow>("SELECT * FROM images WHERE job_id = ? ORDER BY idx", jobId).map(toImage);
  }

  imageCount(): number {
    return Number(this.db.get<{ n: number }>("SELECT COUNT(*) AS n FROM images")?.n ?? 0);
  }

  saveProfile(jobId: string, rows: unknown[], now = Date.now()): void {
    this.db.run(
      "INSERT OR REPLACE INTO profiles (job_id, rows, created_at) VALUES (?, ?, ?)",
      jobId,
      JSON.stringify(rows),
      now,
    );
  }

  /** The profile rows saved for one job, or null. */
  profile(jobId: string): unknown[] | null {
    const row = this.db.get<{ rows: string }>("SELECT rows FROM profiles WHERE job_id = ?", jobId);
    return row ? (JSON.parse(row.rows) as unknown[]) : null;
  }

  /** Forgets a job with its images and profile (a worker's local record, before it takes the job again). */
  remove(id: string): void {
    this.db.transaction(() => {
      this.db.run("DELETE FROM images WHERE job_id = ?", id);
      this.db.run("DELETE FROM profiles WHERE job_id = ?", id);
      this.db.run("DELETE FROM jobs WHERE id = ?", id);
    });
  }

  recentProfiles(limit: number): { jobId: string; rows: unknown[]; createdAt: number }[] {
    return this.db
      .all<{ job_id: string; rows: string; created_at: number }>(
        "SELECT * FROM profiles ORDER BY created_at DESC LIMIT ?",
        limit,
      )
      .map((row) => ({ jobId: row.job_id, rows: JSON.parse(row.rows), createdAt: row.created_at }));
  }
}
