/**
 * Training data of the generator: a CheXpert-layout folder (train.csv beside the images, such as the
 * phantom's output) or a RoentGen-style prompt folder, read with @cxr/data's loaders. Only the
 * training split is used; each record's prompt comes from `promptFromRecord`.
 */
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { type CxrRecord, loadChexpert, loadFolder } from "@cxr/data";
import { promptFromRecord } from "../model/prompt.ts";

export type TrainingDataFormat = "chexpert" | "folder";

export interface TrainingData {
  format: TrainingDataFormat;
  records: CxrRecord[];
  prompts: string[];
  /** What was left out and why (other splits, records without sex/age). */
  notes: string[];
}

export class TrainingDataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TrainingDataError";
  }
}

/** "chexpert" when DIR has a train.csv, else "folder" (images with .txt prompts). */
export function detectFormat(dir: string): TrainingDataFormat {
  if (!existsSync(dir)) throw new TrainingDataError(`training data folder ${dir} does not exist`);
  if (!statSync(dir).isDirectory()) throw new TrainingDataError(`training data ${dir} is not a folder`);
  return existsSync(join(dir, "train.csv")) ? "chexpert" : "folder";
}

/** Loads the training split of DIR with one prompt per record; throws when nothing is left to train on. */
export function loadTrainingData(dir: string, format: TrainingDataFormat = detectFormat(dir)): TrainingData {
  const loaded =
    format === "chexpert" ? loadChexpert(dir, { onError: "skip" }) : loadFolder(dir, { onError: "skip" });
  const notes: string[] = [];
  if (loaded.skipped > 0) notes.push(`${loaded.skipped} rows or images skipped by the loader`);
  const hasSplits = loaded.records.some((record) => record.split !== null);
  let records = hasSplits ? loaded.records.filter((record) => record.split === "train") : loaded.records;
  if (hasSplits && records.length < loaded.records.length) {
    notes.push(
      `${loaded.records.length - records.length} records of other splits left out (train split only)`,
    );
  }
  if (!hasSplits) notes.push("the folder has no train/valid/test sub-folders: every image is used");
  const prompts: string[] = [];
  const kept: CxrRecord[] = [];
  let unprompted = 0;
  for (const record of records) {
    try {
      prompts.push(promptFromRecord(record));
      kept.push(record);
    } catch {
      unprompted++;
    }
  }
  if (unprompted > 0) notes.push(`${unprompted} records without sex or age (no prompt) left out`);
  records = kept;
  if (records.length === 0) {
    throw new TrainingDataError(
      `no training images in ${dir} (${format} layout: ${loaded.records.length} records read, ${loaded.skipped} skipped${notes.length > 0 ? `; ${notes.join("; ")}` : ""})`,
    );
  }
  return { format, records, prompts, notes };
}
