/**
 * The one record type every dataset becomes: CheXpert, MIMIC-CXR-JPG, RoentGen-v2 prompt folders and
 * the phantom all load into `CxrRecord`, so the classifier, the generator and the fairness study never
 * need to know where an image came from.
 */

/** The 14 CheXpert observations, in the column order of CheXpert's `train.csv` (DOMAIN.md §4). */
export const CHEXPERT_LABELS = [
  "No Finding",
  "Enlarged Cardiomediastinum",
  "Cardiomegaly",
  "Lung Opacity",
  "Lung Lesion",
  "Edema",
  "Consolidation",
  "Pneumonia",
  "Atelectasis",
  "Pneumothorax",
  "Pleural Effusion",
  "Pleural Other",
  "Fracture",
  "Support Devices",
] as const;
export type ChexpertLabel = (typeof CHEXPERT_LABELS)[number];

/** CheXpert label coding: 1 positive, 0 negative, -1 uncertain, null blank ("not mentioned"). */
export type LabelValue = 1 | 0 | -1 | null;
export type LabelSet = Record<ChexpertLabel, LabelValue>;

/** Race/ethnicity groups used by RoentGen-v2 prompts and the fairness study. */
export const RACES = ["WHITE", "BLACK", "ASIAN", "HISPANIC"] as const;
export type Race = (typeof RACES)[number];

export const SEXES = ["female", "male"] as const;
export type Sex = (typeof SEXES)[number];

/** `valid` is CheXpert's name; MIMIC's `validate` is mapped onto it. */
export const SPLITS = ["train", "valid", "test"] as const;
export type Split = (typeof SPLITS)[number];

/** Age bins of Seyyed-Kalantari et al. 2021 (DOMAIN.md §3); the lower edge is inclusive. */
export const AGE_BINS = ["0-20", "20-40", "40-60", "60-80", "80+"] as const;
export type AgeBin = (typeof AGE_BINS)[number];

export function ageBin(age: number): AgeBin {
  if (age < 20) return "0-20";
  if (age < 40) return "20-40";
  if (age < 60) return "40-60";
  if (age < 80) return "60-80";
  return "80+";
}

/** Where a record came from, so a later problem (missing image, corrupt pixels) can name file and row. */
export interface RecordSource {
  file: string;
  /** 1-based CSV row, header = row 1; null for sources without rows (a prompt folder). */
  row: number | null;
  /** The column of that row that names the image (CheXpert `Path`, MIMIC `dicom_id`). */
  imageColumn?: string;
}

export interface CxrRecord {
  patientId: string;
  studyId: string;
  /** Absolute path of the image file. */
  imagePath: string;
  /** Upper-case view position as the dataset spells it (PA, AP, LATERAL, LL, ...); null when unknown. */
  view: string | null;
  frontal: boolean;
  sex: Sex | null;
  /** Age in years at the time of the radiograph. */
  age: number | null;
  race: Race | null;
  institution: string | null;
  labels: LabelSet;
  split: Split | null;
  /** RoentGen-v2 style prompt when the dataset has one. */
  prompt: string | null;
  source: RecordSource;
}

export function blankLabels(): LabelSet {
  const labels = {} as LabelSet;
  for (const label of CHEXPERT_LABELS) labels[label] = null;
  return labels;
}
