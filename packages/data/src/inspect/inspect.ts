import type { DataIssue, OnError } from "../errors.ts";
import { checkImages, type ImageCheckLevel } from "../images/check.ts";
import { type AnyLoaderOptions, type DatasetFormat, loadDataset } from "../loaders/index.ts";
import { type DatasetSummary, summarizeDataset } from "./summary.ts";

export interface InspectOptions {
  onError: OnError;
  /** "none" reads the tables only; "exists" stats every image; "decode" decodes every image. */
  images: ImageCheckLevel | "none";
  /** Problems listed one by one; all are counted. */
  maxProblems: number;
  loader: AnyLoaderOptions;
}

export const DEFAULT_INSPECT_OPTIONS: InspectOptions = {
  // Inspection exists to find problems, so by default it lists them all instead of stopping at one.
  onError: "skip",
  images: "exists",
  maxProblems: 20,
  loader: {},
};

export interface InspectReport {
  format: DatasetFormat;
  path: string;
  files: string[];
  summary: DatasetSummary;
}

/** Loads a dataset, checks its images as asked, and counts what is in it and what is wrong with it. */
export async function inspectDataset(
  format: DatasetFormat,
  path: string,
  options: Partial<InspectOptions> = {},
): Promise<InspectReport> {
  const resolved = { ...DEFAULT_INSPECT_OPTIONS, ...options };
  const loaded = loadDataset(format, path, { ...resolved.loader, onError: resolved.onError });
  let records = loaded.records;
  const issues: DataIssue[] = [...loaded.issues];
  let skipped = loaded.skipped;
  if (resolved.images !== "none") {
    const checked = await checkImages(records, { level: resolved.images, onError: resolved.onError });
    records = checked.records;
    issues.push(...checked.issues);
    skipped += checked.skipped;
  }
  return {
    format,
    path,
    files: loaded.files,
    summary: summarizeDataset(records, issues, skipped, resolved.maxProblems),
  };
}
