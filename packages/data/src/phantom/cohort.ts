/**
 * Planning a phantom dataset without drawing it: patients per institution, their studies, labels,
 * impressions, prompts and patient-level splits. Everything the CSVs and the side file hold comes from
 * here; dataset.ts only renders and writes. Training code can use this directly with renderPhantom to
 * draw images on the fly.
 */
import { DEFAULT_PATIENT_SPLIT, type SplitFractions } from "../pipeline/splits.ts";
import { Rng } from "../random.ts";
import { type LabelSet, SPLITS, type Split } from "../records.ts";
import type { Condition } from "./conditions.ts";
import { findInstitution, type InstitutionProfile } from "./institutions.ts";
import { labelsFromFindings } from "./labels.ts";
import { writeImpression, writePrompt } from "./report.ts";
import { samplePermanentDevices } from "./sample/devices.ts";
import { samplePatient } from "./sample/patient.ts";
import { sampleStudy } from "./sample/study.ts";
import type { Demographics, PhantomParameters, Reported } from "./types.ts";

export const DEFAULT_SPLIT_FRACTIONS: Readonly<SplitFractions> = DEFAULT_PATIENT_SPLIT.fractions;
/** No patient has more than this many studies. */
const MAX_STUDIES_PER_PATIENT = 6;

export interface PhantomCohortOptions {
  /** Number of images (one frontal image per study). */
  count: number;
  /** Institution ids, each getting an equal share of the images. */
  institutions: readonly string[];
  seed: number;
  splitFractions?: Readonly<SplitFractions>;
  /** First component of each CheXpert `Path` (CheXpert's is "CheXpert-v1.0-small"). */
  rootName?: string;
}

export interface PhantomStudy {
  /** CheXpert-style relative path: `<root>/<split>/patient00001/study1/view1_frontal.png`. */
  path: string;
  patientId: string;
  studyId: string;
  institution: string;
  split: Split;
  demographics: Demographics;
  /** The latent clinical conditions behind the findings (not visible as such in the image). */
  conditions: Condition[];
  pneumonia: Reported | null;
  labels: LabelSet;
  impression: string;
  prompt: string;
  /** PA-equivalent cardiothoracic ratio; Cardiomegaly means > 0.5. AP films draw the heart 8% wider. */
  cardiothoracicRatio: number;
  parameters: PhantomParameters;
}

function poisson(mean: number, rng: Rng): number {
  const limit = Math.exp(-mean);
  let product = rng.next();
  let count = 0;
  while (product > limit) {
    count++;
    product *= rng.next();
  }
  return count;
}

/** Splits patient indices by the fractions, after a seeded shuffle: a patient never spans two splits. */
export function splitPatients(patientCount: number, fractions: Readonly<SplitFractions>, rng: Rng): Split[] {
  const order = rng.shuffle(Array.from({ length: patientCount }, (_, index) => index));
  const splits: Split[] = new Array(patientCount);
  const trainCount = Math.round(patientCount * fractions.train);
  const validCount = Math.round(patientCount * (fractions.train + fractions.valid)) - trainCount;
  for (let rank = 0; rank < patientCount; rank++) {
    splits[order[rank]] = rank < trainCount ? "train" : rank < trainCount + validCount ? "valid" : "test";
  }
  return splits;
}

export function validateSplitFractions(fractions: Readonly<SplitFractions>): void {
  let total = 0;
  for (const split of SPLITS) {
    const fraction = fractions[split];
    if (!(fraction >= 0 && fraction <= 1))
      throw new Error(`split fraction for ${split} must be within 0-1, got ${fraction}`);
    total += fraction;
  }
  if (Math.abs(total - 1) > 1e-6) throw new Error(`split fractions must sum to 1, got ${total}`);
}

/** Images per institution: an equal share, the remainder going to the first institutions. */
function imagesPerInstitution(count: number, institutions: number): number[] {
  const base = Math.floor(count / institutions);
  return Array.from({ length: institutions }, (_, index) => base + (index < count % institutions ? 1 : 0));
}

interface PlannedStudy extends Omit<PhantomStudy, "path" | "patientId" | "split"> {
  patientIndex: number;
}

function planInstitution(institution: InstitutionProfile, images: number, seed: number): PlannedStudy[] {
  const studies: PlannedStudy[] = [];
  for (let patientIndex = 0; studies.length < images; patientIndex++) {
    const patientRng = Rng.derive(seed, "patient", institution.id, patientIndex);
    const patient = samplePatient(institution, patientRng);
    const permanentDevices = samplePermanentDevices(
      patient.chronicConditions,
      patient.demographics.age,
      patientRng,
    );
    const studyCount = Math.min(
      MAX_STUDIES_PER_PATIENT,
      1 + poisson(institution.followUpStudiesMean, patientRng),
    );
    let previousAcuteConditions: Condition[] = [];
    let yearsLater = 0;
    for (let studyIndex = 0; studyIndex < studyCount && studies.length < images; studyIndex++) {
      const rng = Rng.derive(seed, "study", institution.id, patientIndex, studyIndex);
      if (studyIndex > 0) yearsLater += rng.uniform(0, 1);
      const age = Math.min(90, patient.demographics.age + Math.floor(yearsLater));
      const study = sampleStudy(
        { patient, institution, age, permanentDevices, previousAcuteConditions },
        rng,
      );
      previousAcuteConditions = study.acuteConditions;
      const { parameters, pneumonia } = study;
      const impression = writeImpression(parameters, pneumonia, rng.int(0, 2));
      studies.push({
        patientIndex,
        studyId: `study${studyIndex + 1}`,
        institution: institution.id,
        demographics: parameters.demographics,
        conditions: study.conditions,
        pneumonia,
        labels: labelsFromFindings(parameters.findings, parameters.devices, pneumonia),
        impression,
        prompt: writePrompt(parameters.demographics, impression),
        cardiothoracicRatio: study.cardiothoracicRatio,
        parameters,
      });
    }
  }
  return studies;
}

export function planPhantomCohort(options: PhantomCohortOptions): PhantomStudy[] {
  const { count, seed } = options;
  const fractions = options.splitFractions ?? DEFAULT_SPLIT_FRACTIONS;
  const rootName = options.rootName ?? "phantom";
  if (!Number.isSafeInteger(count) || count < 1)
    throw new Error(`image count must be a positive integer, got ${count}`);
  if (!Number.isSafeInteger(seed) || seed < 0)
    throw new Error(`seed must be a non-negative integer, got ${seed}`);
  if (options.institutions.length === 0) throw new Error("at least one institution is needed");
  if (new Set(options.institutions).size !== options.institutions.length) {
    throw new Error(`institutions are listed twice: ${options.institutions.join(", ")}`);
  }
  validateSplitFractions(fractions);
  const institutions = options.institutions.map(findInstitution);
  const shares = imagesPerInstitution(count, institutions.length);
  const digits = Math.max(5, String(count).length);
  const studies: PhantomStudy[] = [];
  let patientsBefore = 0;
  for (const [index, institution] of institutions.entries()) {
    const planned = planInstitution(institution, shares[index], seed);
    const patientCount = planned.length === 0 ? 0 : planned[planned.length - 1].patientIndex + 1;
    const splits = splitPatients(patientCount, fractions, Rng.derive(seed, "split", institution.id));
    for (const { patientIndex, ...study } of planned) {
      const split = splits[patientIndex];
      const patientId = `patient${String(patientsBefore + patientIndex + 1).padStart(digits, "0")}`;
      studies.push({
        ...study,
        path: `${rootName}/${split}/${patientId}/${study.studyId}/view1_frontal.png`,
        patientId,
        split,
      });
    }
    patientsBefore += patientCount;
  }
  return studies;
}
