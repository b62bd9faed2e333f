import type { DataIssue } from "../errors.ts";
import { patientsInSeveralSplits } from "../pipeline/splits.ts";
import {
  AGE_BINS,
  ageBin,
  CHEXPERT_LABELS,
  type ChexpertLabel,
  type CxrRecord,
  RACES,
  SEXES,
  SPLITS,
} from "../records.ts";

/** Value -> count, keys in display order; missing values count under "unknown". */
export type Counts = Record<string, number>;

export interface LabelValueCounts {
  positive: number;
  negative: number;
  uncertain: number;
  blank: number;
}

export interface ProblemSummary {
  total: number;
  /** Rows or images dropped because of them. */
  skipped: number;
  byKind: Counts;
  /** The first problems, in the order found. */
  first: DataIssue[];
}

export interface DatasetSummary {
  images: number;
  patients: number;
  studies: number;
  split: Counts;
  view: Counts;
  sex: Counts;
  ageBin: Counts;
  race: Counts;
  institution: Counts;
  labels: Record<ChexpertLabel, LabelValueCounts>;
  /** Patients with images in more than one split: leakage between training and evaluation. */
  patientsInSeveralSplits: number;
  problems: ProblemSummary;
}

const UNKNOWN = "unknown";

export function summarizeDataset(
  records: readonly CxrRecord[],
  issues: readonly DataIssue[],
  skipped: number,
  maxProblems: number,
): DatasetSummary {
  const labels = {} as Record<ChexpertLabel, LabelValueCounts>;
  for (const label of CHEXPERT_LABELS) labels[label] = { positive: 0, negative: 0, uncertain: 0, blank: 0 };
  for (const record of records) {
    for (const label of CHEXPERT_LABELS) {
      const value = record.labels[label];
      const counts = labels[label];
      if (value === 1) counts.positive++;
      else if (value === 0) counts.negative++;
      else if (value === -1) counts.uncertain++;
      else counts.blank++;
    }
  }
  const byKind: Counts = {};
  for (const issue of issues) byKind[issue.kind] = (byKind[issue.kind] ?? 0) + 1;
  return {
    images: records.length,
    patients: new Set(records.map((record) => record.patientId)).size,
    studies: new Set(records.map((record) => `${record.patientId}/${record.studyId}`)).size,
    split: count(records, (record) => record.split, SPLITS),
    view: count(records, (record) => record.view),
    sex: count(records, (record) => record.sex, SEXES),
    ageBin: count(records, (record) => (record.age === null ? null : ageBin(record.age)), AGE_BINS),
    race: count(records, (record) => record.race, RACES),
    institution: count(records, (record) => record.institution),
    labels,
    patientsInSeveralSplits: patientsInSeveralSplits(records).size,
    problems: { total: issues.length, skipped, byKind, first: issues.slice(0, maxProblems) },
  };
}

/**
 * Counts of one attribute. With a known vocabulary every value is listed in its order, zeros included,
 * so an absent group is visible; otherwise values are listed by decreasing count. "unknown" comes last
 * and only when some record lacks the value.
 */
function count(
  records: readonly CxrRecord[],
  attributeOf: (record: CxrRecord) => string | null,
  vocabulary?: readonly string[],
): Counts {
  const tally = new Map<string, number>();
  for (const record of records) {
    const value = attributeOf(record) ?? UNKNOWN;
    tally.set(value, (tally.get(value) ?? 0) + 1);
  }
  const known = [...tally.keys()].filter((value) => value !== UNKNOWN);
  const ordered =
    vocabulary === undefined
      ? known.sort((a, b) => tally.get(b)! - tally.get(a)! || (a < b ? -1 : 1))
      : [...vocabulary, ...known.filter((value) => !vocabulary.includes(value)).sort()];
  const counts: Counts = {};
  for (const value of ordered) counts[value] = tally.get(value) ?? 0;
  if (tally.has(UNKNOWN)) counts[UNKNOWN] = tally.get(UNKNOWN)!;
  return counts;
}
