/**
 * The phantom's named institutions. They differ where real hospitals differ: how they acquire images
 * (exposure curve, noise, blur, edge enhancement, AP/PA mix, markers, collimation), whom they see
 * (age, sex, race mix) and what those patients have (condition rates). `highland` is skewed on
 * purpose (few older female and few minority patients) so that a classifier trained there shows
 * subgroup gaps and drops out of distribution; `valley` is paediatric-heavy; `riverside` is an ICU-heavy
 * safety-net hospital with portable films; `harbor` is an outpatient clinic with a vendor that
 * sharpens edges. All names are fictional.
 */
import type { AgeBin, Race } from "../records.ts";
import type { Condition } from "./conditions.ts";
import type { Corner } from "./types.ts";

/** One value per age bin, in the order of AGE_BINS (0-20, 20-40, 40-60, 60-80, 80+). */
export type PerAgeBin = Readonly<Record<AgeBin, number>>;

export interface MarkerStyle {
  text: string;
  corner: Corner;
  /** Letter height as a fraction of the image. */
  height: number;
}

export interface InstitutionProfile {
  id: string;
  name: string;
  description: string;
  demographics: {
    ageBinWeights: PerAgeBin;
    femaleShare: PerAgeBin;
    /** Race mix of patients under 60. */
    raceWeights: Readonly<Record<Race, number>>;
    /** Race mix of patients 60 and older. */
    olderRaceWeights: Readonly<Record<Race, number>>;
  };
  /** Mean number of follow-up studies per patient beyond the first. */
  followUpStudiesMean: number;
  /** Multipliers of the base condition rates (missing = 1). */
  conditionRates: Readonly<Partial<Record<Condition, number>>>;
  acquisition: {
    /** Share of AP films among patients who are not critically ill (critical patients get portable AP). */
    apShare: number;
    exposureGain: { mean: number; sd: number };
    gamma: number;
    window: { low: number; high: number };
    heel: number;
    noiseSigma: number;
    /** Detector blur, Gaussian sigma as a fraction of the image width. */
    blur: number;
    sharpen: { amount: number; radius: number };
    collimation: number;
    /** Positioning variability: centre shift (image fraction), rotation (radians), magnification (relative). */
    positioning: { shift: number; tilt: number; scale: number };
    lateralityMarker: MarkerStyle;
    /** Text tag burnt in on AP (portable) films, or null. */
    portableMarker: MarkerStyle | null;
  };
}

export const INSTITUTIONS: readonly InstitutionProfile[] = [
  {
    id: "northgate",
    name: "Northgate University Hospital",
    description: "Academic tertiary centre: mixed inpatients and outpatients, balanced demographics.",
    demographics: {
      ageBinWeights: { "0-20": 0.05, "20-40": 0.18, "40-60": 0.3, "60-80": 0.32, "80+": 0.15 },
      femaleShare: { "0-20": 0.48, "20-40": 0.5, "40-60": 0.5, "60-80": 0.5, "80+": 0.55 },
      raceWeights: { WHITE: 0.5, BLACK: 0.18, ASIAN: 0.16, HISPANIC: 0.16 },
      olderRaceWeights: { WHITE: 0.55, BLACK: 0.17, ASIAN: 0.14, HISPANIC: 0.14 },
    },
    followUpStudiesMean: 0.6,
    conditionRates: {},
    acquisition: {
      apShare: 0.2,
      exposureGain: { mean: 2, sd: 0.1 },
      gamma: 1,
      window: { low: 0.34, high: 1 },
      heel: 0.06,
      noiseSigma: 0.012,
      blur: 0.0012,
      sharpen: { amount: 0, radius: 0 },
      collimation: 0,
      positioning: { shift: 0.015, tilt: 0.02, scale: 0.04 },
      lateralityMarker: { text: "R", corner: "top-left", height: 0.05 },
      portableMarker: { text: "PORTABLE", corner: "top-right", height: 0.03 },
    },
  },
  {
    id: "riverside",
    name: "Riverside County Medical Center",
    description:
      "Safety-net hospital with a large ICU: mostly portable AP films, noisier and softer, older and diverse.",
    demographics: {
      ageBinWeights: { "0-20": 0.03, "20-40": 0.15, "40-60": 0.3, "60-80": 0.35, "80+": 0.17 },
      femaleShare: { "0-20": 0.45, "20-40": 0.42, "40-60": 0.44, "60-80": 0.47, "80+": 0.55 },
      raceWeights: { WHITE: 0.28, BLACK: 0.3, ASIAN: 0.1, HISPANIC: 0.32 },
      olderRaceWeights: { WHITE: 0.32, BLACK: 0.3, ASIAN: 0.1, HISPANIC: 0.28 },
    },
    followUpStudiesMean: 1.2,
    conditionRates: { critical: 3, heartFailure: 1.5, pneumonia: 1.5, trauma: 1.5, malignancy: 0.9 },
    acquisition: {
      apShare: 0.6,
      exposureGain: { mean: 1.7, sd: 0.15 },
      gamma: 0.9,
      window: { low: 0.22, high: 0.97 },
      heel: 0.1,
      noiseSigma: 0.03,
      blur: 0.0028,
      sharpen: { amount: 0, radius: 0 },
      collimation: 0,
      positioning: { shift: 0.03, tilt: 0.045, scale: 0.07 },
      lateralityMarker: { text: "L", corner: "top-right", height: 0.055 },
      portableMarker: { text: "AP PORTABLE", corner: "top-left", height: 0.03 },
    },
  },
  {
    id: "highland",
    name: "Highland Sports and Occupational Clinic",
    description:
      "Deliberately skewed: young, mostly male and white; few older women and few minority patients; sharp, quiet PA films.",
    demographics: {
      ageBinWeights: { "0-20": 0.08, "20-40": 0.52, "40-60": 0.32, "60-80": 0.07, "80+": 0.01 },
      femaleShare: { "0-20": 0.4, "20-40": 0.3, "40-60": 0.22, "60-80": 0.08, "80+": 0.05 },
      raceWeights: { WHITE: 0.88, BLACK: 0.04, ASIAN: 0.04, HISPANIC: 0.04 },
      olderRaceWeights: { WHITE: 0.97, BLACK: 0.01, ASIAN: 0.01, HISPANIC: 0.01 },
    },
    followUpStudiesMean: 0.25,
    conditionRates: {
      critical: 0.15,
      heartFailure: 0.5,
      malignancy: 0.5,
      trauma: 2.5,
      spontaneousPneumothorax: 2.5,
      pneumonia: 0.8,
    },
    acquisition: {
      apShare: 0.04,
      exposureGain: { mean: 2.2, sd: 0.06 },
      gamma: 1.15,
      window: { low: 0.32, high: 1 },
      heel: 0.03,
      noiseSigma: 0.007,
      blur: 0.0008,
      sharpen: { amount: 0, radius: 0 },
      collimation: 0,
      positioning: { shift: 0.01, tilt: 0.012, scale: 0.03 },
      lateralityMarker: { text: "L", corner: "top-right", height: 0.04 },
      portableMarker: null,
    },
  },
  {
    id: "harbor",
    name: "Harbor Community Health",
    description:
      "Outpatient clinic serving an older, largely Asian and Hispanic community; edge-enhanced, collimated films.",
    demographics: {
      ageBinWeights: { "0-20": 0.04, "20-40": 0.14, "40-60": 0.32, "60-80": 0.35, "80+": 0.15 },
      femaleShare: { "0-20": 0.5, "20-40": 0.55, "40-60": 0.56, "60-80": 0.55, "80+": 0.6 },
      raceWeights: { WHITE: 0.18, BLACK: 0.1, ASIAN: 0.4, HISPANIC: 0.32 },
      olderRaceWeights: { WHITE: 0.2, BLACK: 0.1, ASIAN: 0.42, HISPANIC: 0.28 },
    },
    followUpStudiesMean: 0.4,
    conditionRates: {
      critical: 0.25,
      malignancy: 1.4,
      incidentalNodule: 2,
      pleuralDisease: 1.5,
      trauma: 0.6,
    },
    acquisition: {
      apShare: 0.08,
      exposureGain: { mean: 1.9, sd: 0.1 },
      gamma: 0.95,
      window: { low: 0.28, high: 1 },
      heel: 0.05,
      noiseSigma: 0.015,
      blur: 0.0015,
      sharpen: { amount: 0.7, radius: 0.015 },
      collimation: 0.025,
      positioning: { shift: 0.02, tilt: 0.02, scale: 0.05 },
      lateralityMarker: { text: "R", corner: "bottom-left", height: 0.045 },
      portableMarker: null,
    },
  },
  {
    id: "valley",
    name: "Valley Children's and Family Hospital",
    description: "Paediatric and young-family hospital: many children, many infants on supine AP films.",
    demographics: {
      ageBinWeights: { "0-20": 0.55, "20-40": 0.25, "40-60": 0.12, "60-80": 0.06, "80+": 0.02 },
      femaleShare: { "0-20": 0.48, "20-40": 0.62, "40-60": 0.52, "60-80": 0.5, "80+": 0.55 },
      raceWeights: { WHITE: 0.35, BLACK: 0.2, ASIAN: 0.12, HISPANIC: 0.33 },
      olderRaceWeights: { WHITE: 0.4, BLACK: 0.2, ASIAN: 0.12, HISPANIC: 0.28 },
    },
    followUpStudiesMean: 0.5,
    conditionRates: { pneumonia: 1.6, heartFailure: 0.4, malignancy: 0.3, critical: 0.9 },
    acquisition: {
      apShare: 0.35,
      exposureGain: { mean: 1.9, sd: 0.12 },
      gamma: 1.05,
      window: { low: 0.26, high: 0.98 },
      heel: 0.07,
      noiseSigma: 0.02,
      blur: 0.002,
      sharpen: { amount: 0.25, radius: 0.02 },
      collimation: 0,
      positioning: { shift: 0.03, tilt: 0.04, scale: 0.06 },
      lateralityMarker: { text: "R", corner: "top-left", height: 0.065 },
      portableMarker: { text: "SUPINE", corner: "bottom-right", height: 0.03 },
    },
  },
];

export function institutionIds(): string[] {
  return INSTITUTIONS.map((institution) => institution.id);
}

export function findInstitution(id: string): InstitutionProfile {
  const institution = INSTITUTIONS.find((candidate) => candidate.id === id);
  if (institution === undefined) {
    throw new Error(`unknown phantom institution "${id}" (known: ${institutionIds().join(", ")}, or "all")`);
  }
  return institution;
}
