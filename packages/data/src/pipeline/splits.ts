import { Rng } from "../random.ts";
import { type CxrRecord, SPLITS, type Split } from "../records.ts";

export type SplitFractions = Record<Split, number>;

export interface PatientSplitOptions {
  fractions: SplitFractions;
  seed: number;
  /** Replace splits the dataset already has; by default only records without a split get one. */
  overwrite?: boolean;
}

export const DEFAULT_PATIENT_SPLIT: PatientSplitOptions = {
  fractions: { train: 0.8, valid: 0.1, test: 0.1 },
  seed: 0,
  overwrite: false,
};

/**
 * Assigns splits by patient, never by image, so no patient's images land on both sides of an
 * evaluation. Patients (sorted by id, then shuffled with the seed) are cut at the cumulative fractions
 * rounded to whole patients; the same seed and patients always give the same split. Unless `overwrite`
 * is set, patients that already have a split keep it, and their images without one join it.
 */
export function assignPatientSplits(
  records: readonly CxrRecord[],
  options: PatientSplitOptions = DEFAULT_PATIENT_SPLIT,
): CxrRecord[] {
  const { fractions, seed, overwrite = false } = options;
  const total = SPLITS.reduce((sum, split) => sum + fractions[split], 0);
  for (const split of SPLITS) {
    if (!(fractions[split] >= 0))
      throw new Error(`split fraction for ${split} must be >= 0, got ${fractions[split]}`);
  }
  if (Math.abs(total - 1) > 1e-6) throw new Error(`split fractions must add up to 1, got ${total}`);

  const splitOfPatient = new Map<string, Split>();
  if (!overwrite) {
    for (const record of records) {
      if (record.split !== null && !splitOfPatient.has(record.patientId)) {
        splitOfPatient.set(record.patientId, record.split);
      }
    }
  }
  const unsplitPatients = [...new Set(records.map((record) => record.patientId))]
    .filter((patient) => !splitOfPatient.has(patient))
    .sort();
  const order = Rng.derive("splits", seed).shuffle(unsplitPatients);
  let start = 0;
  let cumulative = 0;
  for (const split of SPLITS) {
    cumulative += fractions[split];
    const end = split === SPLITS[SPLITS.length - 1] ? order.length : Math.round(cumulative * order.length);
    for (const patient of order.slice(start, end)) splitOfPatient.set(patient, split);
    start = end;
  }
  return records.map((record) => {
    const split = splitOfPatient.get(record.patientId);
    return split === undefined || (!overwrite && record.split !== null) ? record : { ...record, split };
  });
}

/** Patients whose images sit in more than one split, with those splits; empty for a clean split. */
export function patientsInSeveralSplits(records: readonly CxrRecord[]): Map<string, Split[]> {
  const splits = new Map<string, Set<Split>>();
  for (const record of records) {
    if (record.split === null) continue;
    const patientSplits = splits.get(record.patientId) ?? new Set<Split>();
    patientSplits.add(record.split);
    splits.set(record.patientId, patientSplits);
  }
  const leaks = new Map<string, Split[]>();
  for (const [patient, patientSplits] of splits) {
    if (patientSplits.size > 1) leaks.set(patient, [...patientSplits].sort());
  }
  return leaks;
}
