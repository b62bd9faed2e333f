import { stat } from "node:fs/promises";
import { type DataIssue, IssueLog, type OnError } from "../errors.ts";
import type { CxrRecord } from "../records.ts";
import { decodeImage, ImageReadError } from "./decode.ts";

/**
 * "exists": each image file is there and not empty (one stat per image);
 * "decode": each image decodes completely, which catches truncated and corrupt files (reads every byte).
 */
export const IMAGE_CHECK_LEVELS = ["exists", "decode"] as const;
export type ImageCheckLevel = (typeof IMAGE_CHECK_LEVELS)[number];

export interface ImageCheckOptions {
  level: ImageCheckLevel;
  onError: OnError;
  /** Images checked at once; decoding runs on libuv's thread pool. */
  concurrency: number;
}

export const DEFAULT_IMAGE_CHECK: ImageCheckOptions = { level: "exists", onError: "fail", concurrency: 8 };

export interface ImageCheckResult {
  records: CxrRecord[];
  issues: DataIssue[];
  skipped: number;
}

/**
 * Loaders do not touch image files (that costs I/O on 200k-image datasets); this is the explicit step
 * that does. A bad image is reported against the CSV row it came from, then dropped (skip) or thrown
 * (fail, on the first bad image in dataset order).
 */
export async function checkImages(
  records: readonly CxrRecord[],
  options: Partial<ImageCheckOptions> = {},
): Promise<ImageCheckResult> {
  const { level, onError, concurrency } = { ...DEFAULT_IMAGE_CHECK, ...options };
  const problems: (DataIssue | null)[] = new Array(records.length).fill(null);
  let next = 0;
  const worker = async () => {
    while (next < records.length) {
      const index = next++;
      problems[index] = await imageProblem(records[index], level);
      // In fail mode there is no point checking the rest once something is wrong.
      if (problems[index] !== null && onError === "fail") next = records.length;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));

  const log = new IssueLog(onError);
  const kept: CxrRecord[] = [];
  records.forEach((record, index) => {
    const problem = problems[index];
    if (problem === null) {
      kept.push(record);
      return;
    }
    log.report(problem);
    log.skip();
  });
  return { records: kept, issues: log.issues, skipped: log.skipped };
}

async function imageProblem(record: CxrRecord, level: ImageCheckLevel): Promise<DataIssue | null> {
  const where = {
    file: record.source.file,
    row: record.source.row,
    column: record.source.imageColumn ?? null,
  };
  try {
    const info = await stat(record.imagePath);
    if (!info.isFile())
      return { ...where, kind: "missing-image", message: `${record.imagePath} is not a file` };
    if (info.size === 0)
      return { ...where, kind: "unreadable-image", message: `${record.imagePath} is empty` };
  } catch {
    return { ...where, kind: "missing-image", message: `image not found: ${record.imagePath}` };
  }
  if (level === "exists") return null;
  try {
    await decodeImage(record.imagePath);
    return null;
  } catch (error) {
    const kind = error instanceof ImageReadError ? error.kind : "unreadable-image";
    return { ...where, kind, message: error instanceof Error ? error.message : String(error) };
  }
}
