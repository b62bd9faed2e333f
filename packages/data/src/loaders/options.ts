import type { DataIssue, OnError } from "../errors.ts";
import type { CxrRecord } from "../records.ts";

/** Options shared by every loader. */
export interface LoadOptions {
  /** "skip": drop bad rows and report them; "fail": throw on the first problem. */
  onError?: OnError;
  /** Ages outside [min, max] years are reported as out of range. */
  ageRange?: { min: number; max: number };
}

export const DEFAULT_LOAD_OPTIONS = {
  onError: "fail",
  // CheXpert caps ages at 90 and MIMIC-IV at 91; anything past 120 is a data error.
  ageRange: { min: 0, max: 120 },
} as const satisfies Required<LoadOptions>;

export interface LoadResult {
  records: CxrRecord[];
  /** Every problem met, in the order found (empty in fail mode, which throws instead). */
  issues: DataIssue[];
  /** Rows or images dropped because of those problems. */
  skipped: number;
  /** The files read, for reports. */
  files: string[];
}

export function resolveLoadOptions(options: LoadOptions): Required<LoadOptions> {
  return {
    onError: options.onError ?? DEFAULT_LOAD_OPTIONS.onError,
    ageRange: options.ageRange ?? DEFAULT_LOAD_OPTIONS.ageRange,
  };
}
