import type { CxrRecord } from "../records.ts";

/** Keeps frontal views (PA/AP), the usual input of CheXpert classifiers and of RoentGen-v2. */
export function frontalOnly(records: readonly CxrRecord[]): CxrRecord[] {
  return records.filter((record) => record.frontal);
}
