/**
 * Synthetic predictions for the benchmark and tests: patients with demographics, several images
 * each, truth for every label (with uncertain and blank values) and probabilities from a noisy
 * scorer that is deliberately biased against some subgroups, so gaps are non-zero. Probabilities
 * are rounded to 4 decimals, as many exporters do, which creates ties. Labels are drawn independently
 * of each other (No Finding can co-occur with a finding): enough for timing and tests, not a phantom.
 */
import { CHEXPERT_LABELS, type ChexpertLabel, RACES, type Race, Rng, SEXES, type Sex } from "@cxr/data";
import { createPredictionTable, type PredictionInput, type PredictionTable } from "./predictions.ts";

export interface SyntheticPredictionsOptions {
  readonly images: number;
  readonly patients: number;
  readonly seed: number;
  readonly labels?: readonly ChexpertLabel[];
  readonly institutions?: readonly string[];
  /** How strongly the scorer separates classes (logit shift for positives). */
  readonly separation?: number;
}

const RACE_SHARES: Record<Race, number> = { WHITE: 0.6, BLACK: 0.17, ASIAN: 0.13, HISPANIC: 0.1 };

export function synthesizePredictions(options: SyntheticPredictionsOptions): PredictionTable {
  const { images, patients, seed } = options;
  if (patients < 1 || images < patients)
    throw new Error("synthetic predictions need images >= patients >= 1");
  const labels = options.labels ?? CHEXPERT_LABELS;
  const institutions = options.institutions ?? [];
  const separation = options.separation ?? 2;
  const random = Rng.derive("synthetic predictions", seed);
  const normal = (): number => {
    const u = 1 - random.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random.next());
  };
  const pickRace = (): Race => {
    let u = random.next();
    for (const race of RACES) {
      u -= RACE_SHARES[race];
      if (u < 0) return race;
    }
    return RACES[0];
  };

  const patientSex: Sex[] = [];
  const patientRace: Race[] = [];
  const patientAge: number[] = [];
  const patientInstitution: (string | null)[] = [];
  for (let patient = 0; patient < patients; patient++) {
    patientSex.push(SEXES[random.index(SEXES.length)]);
    patientRace.push(pickRace());
    patientAge.push(5 + random.next() * 90);
    patientInstitution.push(institutions.length > 0 ? institutions[random.index(institutions.length)] : null);
  }
  // Every patient has at least one image; the rest are spread at random.
  const patientOfImage = Int32Array.from({ length: images }, (_, image) =>
    image < patients ? image : random.index(patients),
  );

  const rows: PredictionInput["rows"][number][] = [];
  for (let image = 0; image < images; image++) {
    const patient = patientOfImage[image];
    rows.push({
      patientId: `patient${String(patient).padStart(6, "0")}`,
      imageId: `image${String(image).padStart(7, "0")}`,
      sex: patientSex[patient],
      age: Math.min(130, Math.round(patientAge[patient] + random.next() * 3)),
      race: patientRace[patient],
      institution: patientInstitution[patient],
    });
  }

  const columns: PredictionInput["labels"] = {};
  labels.forEach((label, labelIndex) => {
    const prevalence = label === "No Finding" ? 0.35 : 0.04 + 0.02 * (labelIndex % 8);
    const truth: (number | null)[] = new Array(images);
    const probability = new Float64Array(images);
    for (let image = 0; image < images; image++) {
      const row = rows[image];
      const u = random.next();
      truth[image] = u < 0.03 ? -1 : u < 0.1 ? null : random.next() < prevalence ? 1 : 0;
      // The bias: the scorer leans towards "healthy" for women, Black and Hispanic patients and the
      // oldest, so No Finding is over-called (underdiagnosis) there.
      const bias =
        (row.sex === "female" ? 0.25 : 0) +
        (row.race === "BLACK" ? 0.35 : row.race === "HISPANIC" ? 0.2 : 0) +
        (row.age >= 80 ? 0.3 : 0);
      const signal = truth[image] === 1 ? separation : 0;
      const logit =
        Math.log(prevalence / (1 - prevalence)) + signal + (label === "No Finding" ? bias : -bias) + normal();
      probability[image] = Math.round(10000 / (1 + Math.exp(-logit))) / 10000;
    }
    columns[label] = { truth, probability };
  });
  return createPredictionTable({
    source: `synthetic(images=${images}, seed=${seed})`,
    rows,
    labels: columns,
  });
}
