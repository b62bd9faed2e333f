import { type ChexpertOptions, loadChexpert } from "./chexpert.ts";
import { loadFolder } from "./folder.ts";
import { loadMimic, type MimicOptions } from "./mimic.ts";
import type { LoadResult } from "./options.ts";

export const DATASET_FORMATS = ["chexpert", "mimic", "folder"] as const;
export type DatasetFormat = (typeof DATASET_FORMATS)[number];

/** Options of all loaders together; each loader reads the ones that concern it. */
export type AnyLoaderOptions = ChexpertOptions & MimicOptions;

/** One entry point for code that gets the format from the user (the CLI, training configs). */
export function loadDataset(format: DatasetFormat, path: string, options: AnyLoaderOptions = {}): LoadResult {
  switch (format) {
    case "chexpert":
      return loadChexpert(path, options);
    case "mimic":
      return loadMimic(path, options);
    case "folder":
      return loadFolder(path, options);
  }
}
