/**
 * Latent clinical conditions: the hidden causes that make findings co-occur the way they do in real
 * reports (heart failure brings cardiomegaly, edema and effusions; critical illness brings tubes,
 * lines, atelectasis; trauma brings rib fractures and pneumothorax). Each condition has an
 * age- and sex-dependent base rate per study; institutions scale these rates.
 *
 * Chronic conditions belong to the patient and persist across studies; acute ones are drawn per study
 * and tend to persist into the next study of the same patient.
 */
import type { Sex } from "../records.ts";

export const CONDITIONS = [
  "heartFailure",
  "cardiomegalyIsolated",
  "aorticEctasia",
  "malignancy",
  "incidentalNodule",
  "pleuralDisease",
  "cardiacSurgery",
  "pneumonia",
  "critical",
  "trauma",
  "spontaneousPneumothorax",
  "basilarAtelectasis",
] as const;
export type Condition = (typeof CONDITIONS)[number];

export const CHRONIC_CONDITIONS: ReadonlySet<Condition> = new Set<Condition>([
  "heartFailure",
  "cardiomegalyIsolated",
  "aorticEctasia",
  "malignancy",
  "incidentalNodule",
  "pleuralDisease",
  "cardiacSurgery",
]);

/** Chance that an acute condition present at one study is still present at the patient's next one. */
export const ACUTE_PERSISTENCE = 0.55;

function logistic(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** Probability per study, before the institution's multiplier. */
export function baseConditionRate(condition: Condition, age: number, sex: Sex): number {
  const male = sex === "male";
  switch (condition) {
    case "heartFailure":
      return 0.015 + 0.35 * logistic((age - 70) / 9);
    case "cardiomegalyIsolated":
      return 0.01 + 0.05 * logistic((age - 68) / 10);
    case "aorticEctasia":
      return 0.004 + 0.035 * logistic((age - 72) / 8);
    case "malignancy":
      return 0.004 + 0.06 * logistic((age - 65) / 8);
    case "incidentalNodule":
      return 0.015 + 0.045 * logistic((age - 55) / 10);
    case "pleuralDisease":
      return (0.002 + 0.025 * logistic((age - 66) / 8)) * (male ? 1.6 : 0.5);
    case "cardiacSurgery":
      return (0.003 + 0.05 * logistic((age - 66) / 7)) * (male ? 1.3 : 0.75);
    case "pneumonia":
      // U-shaped: small children and the elderly.
      return 0.07 + 0.1 * Math.exp(-age / 5) + 0.1 * logistic((age - 72) / 8);
    case "critical":
      return 0.06 + 0.15 * logistic((age - 62) / 12);
    case "trauma":
      return (0.015 + 0.035 * Math.exp(-(((age - 30) / 16) ** 2))) * (male ? 1.7 : 0.6);
    case "spontaneousPneumothorax":
      // Tall, thin young men.
      return male && age >= 15 && age <= 40 ? 0.015 : 0.002;
    case "basilarAtelectasis":
      return 0.03 + 0.07 * logistic((age - 65) / 10);
  }
}
