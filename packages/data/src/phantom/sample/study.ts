/**
 * Sampling one study of a patient: acute conditions (with persistence from the previous study), the
 * acquisition, the findings and devices they bring, and the anatomy as drawn (heart size, volume loss,
 * supine inspiration, AP magnification).
 */

import type { Rng } from "../../random.ts";
import {
  ACUTE_PERSISTENCE,
  baseConditionRate,
  CHRONIC_CONDITIONS,
  CONDITIONS,
  type Condition,
} from "../conditions.ts";
import type { InstitutionProfile } from "../institutions.ts";
import type { Anatomy, Device, PhantomParameters, Reported } from "../types.ts";
import { sampleAcquisition } from "./acquisition.ts";
import { sampleStudyDevices } from "./devices.ts";
import { CARDIOTHORACIC_RATIO_BY_SEVERITY, FindingSampler } from "./findings.ts";
import { heartGeometry, type SampledPatient } from "./patient.ts";

/** An AP film magnifies the heart (it lies far from the detector): radiologists do not call cardiomegaly on it. */
export const AP_HEART_MAGNIFICATION = 1.08;
/** Supine patients take shallower breaths. */
const SUPINE_INSPIRATION = 0.93;
/** Volume loss of a collapsed lower lobe pulls the hemidiaphragm up. */
const LOBAR_COLLAPSE_ELEVATION = 0.08;
/** Stored parameters are rounded so that the side file re-renders the exact same image. */
const PARAMETER_DECIMALS = 1e5;

export interface SampledStudy {
  parameters: PhantomParameters;
  conditions: Condition[];
  acuteConditions: Condition[];
  /** The report's statement about pneumonia: a clinical call on top of the drawn consolidation. */
  pneumonia: Reported | null;
  /** Cardiothoracic ratio as it would measure on a PA film: defines the Cardiomegaly label (> 0.5). */
  cardiothoracicRatio: number;
}

export function roundParameters<T>(value: T): T {
  if (typeof value === "number") {
    return (
      Number.isInteger(value) ? value : Math.round(value * PARAMETER_DECIMALS) / PARAMETER_DECIMALS
    ) as T;
  }
  if (Array.isArray(value)) return value.map((item) => roundParameters(item)) as T;
  if (value !== null && typeof value === "object") {
    const result: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) result[key] = roundParameters(item);
    return result as T;
  }
  return value;
}

function sampleAcuteConditions(
  age: number,
  patient: SampledPatient,
  institution: InstitutionProfile,
  previous: readonly Condition[],
  rng: Rng,
): Condition[] {
  const acute: Condition[] = [];
  for (const condition of CONDITIONS) {
    if (CHRONIC_CONDITIONS.has(condition)) continue;
    const rate = previous.includes(condition)
      ? ACUTE_PERSISTENCE
      : baseConditionRate(condition, age, patient.demographics.sex) *
        (institution.conditionRates[condition] ?? 1);
    if (rng.chance(Math.min(0.95, rate))) acute.push(condition);
  }
  return acute;
}

export interface StudyContext {
  patient: SampledPatient;
  institution: InstitutionProfile;
  age: number;
  permanentDevices: readonly Device[];
  previousAcuteConditions: readonly Condition[];
}

export function sampleStudy(context: StudyContext, rng: Rng): SampledStudy {
  const { patient, institution, age, permanentDevices } = context;
  const acuteConditions = sampleAcuteConditions(
    age,
    patient,
    institution,
    context.previousAcuteConditions,
    rng,
  );
  const conditions = [...patient.chronicConditions, ...acuteConditions];
  const anatomy: Anatomy = structuredClone(patient.anatomy);
  const critical = conditions.includes("critical");
  const acquisition = sampleAcquisition(
    { institution, habitus: patient.habitus, age, critical, lungHeight: anatomy.lungHeight.right },
    rng,
  );
  if (acquisition.supine) {
    anatomy.lungHeight.right *= SUPINE_INSPIRATION;
    anatomy.lungHeight.left *= SUPINE_INSPIRATION;
  }
  const sampler = new FindingSampler(rng, anatomy, acquisition.supine);
  const pneumothorax = sampler.fromConditions(conditions);
  const findings = sampler.findings;

  for (const finding of findings) {
    if (finding.kind === "atelectasis" && finding.pattern === "lobar") {
      anatomy.lungHeight[finding.side] -= LOBAR_COLLAPSE_ELEVATION;
    }
  }
  const cardiomegaly = findings.find((finding) => finding.kind === "cardiomegaly");
  const cardiothoracicRatio =
    cardiomegaly === undefined
      ? patient.heartShape.normalRatio
      : rng.uniform(...CARDIOTHORACIC_RATIO_BY_SEVERITY[cardiomegaly.severity]);
  const drawnRatio = cardiothoracicRatio * (acquisition.view === "AP" ? AP_HEART_MAGNIFICATION : 1);
  anatomy.heart = heartGeometry(drawnRatio, patient.heartShape, anatomy.lungHeight, anatomy.domeRise);

  const devices = [...permanentDevices, ...sampleStudyDevices({ conditions, anatomy, ...pneumothorax }, rng)];
  let pneumonia: Reported | null = null;
  if (conditions.includes("pneumonia")) {
    pneumonia = rng.chance(0.6) ? "positive" : "uncertain";
  } else if (findings.some((finding) => finding.kind === "consolidation" || finding.kind === "opacity")) {
    pneumonia = rng.chance(0.2) ? "uncertain" : null;
  }
  const parameters: PhantomParameters = roundParameters({
    demographics: { ...patient.demographics, age },
    habitus: patient.habitus,
    anatomy,
    findings,
    devices,
    acquisition,
  });
  return {
    parameters,
    conditions,
    acuteConditions,
    pneumonia,
    cardiothoracicRatio: roundParameters(cardiothoracicRatio),
  };
}
