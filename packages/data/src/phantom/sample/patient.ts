/**
 * Sampling a patient: demographics from the institution's mix, then a body build and normal anatomy
 * that depend on them.
 *
 * Race/ethnicity acts only through group-level shifts of habitus (thorax size, soft tissue, breast
 * tissue, bone density). In the phantom this is a device for simulating subgroup shift, so that a
 * classifier can be under-exposed to some groups' appearance; it is not a claim about anatomy.
 */

import type { Rng } from "../../random.ts";
import { type AgeBin, ageBin, type Race, type Sex } from "../../records.ts";
import { baseConditionRate, CHRONIC_CONDITIONS, CONDITIONS, type Condition } from "../conditions.ts";
import type { InstitutionProfile } from "../institutions.ts";
import type { Anatomy, Demographics, Habitus } from "../types.ts";

/** Group-level habitus offsets per race/ethnicity: the phantom's lever for subgroup shift (see above). */
export const RACE_HABITUS_SHIFT: Readonly<
  Record<Race, { thoraxScale: number; softTissue: number; breast: number; boneDensity: number }>
> = {
  WHITE: { thoraxScale: 0, softTissue: 0, breast: 0, boneDensity: 0 },
  BLACK: { thoraxScale: 0.02, softTissue: 0.08, breast: 0.08, boneDensity: 0.08 },
  ASIAN: { thoraxScale: -0.05, softTissue: -0.12, breast: -0.18, boneDensity: -0.05 },
  HISPANIC: { thoraxScale: -0.015, softTissue: 0.12, breast: 0.06, boneDensity: 0 },
};

/** Ages are drawn uniformly inside a bin; 80+ runs to 90, the oldest age CheXpert reports. */
const AGE_BIN_RANGES: Readonly<Record<AgeBin, readonly [number, number]>> = {
  "0-20": [0, 19],
  "20-40": [20, 39],
  "40-60": [40, 59],
  "60-80": [60, 79],
  "80+": [80, 90],
};

/** Shape of the normal heart that stays with the patient; cardiomegaly enlarges it per study. */
export interface HeartShape {
  normalRatio: number;
  /** Share of the heart's width to the right of the midline. */
  rightFraction: number;
  shear: number;
}

export interface SampledPatient {
  demographics: Demographics;
  habitus: Habitus;
  anatomy: Anatomy;
  heartShape: HeartShape;
  chronicConditions: Condition[];
}

function logistic(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

export function sampleDemographics(institution: InstitutionProfile, rng: Rng): Demographics {
  const { ageBinWeights, femaleShare, raceWeights, olderRaceWeights } = institution.demographics;
  const bin = rng.weighted(ageBinWeights);
  const [low, high] = AGE_BIN_RANGES[bin];
  const age = rng.int(low, high);
  const sex: Sex = rng.chance(femaleShare[ageBin(age)]) ? "female" : "male";
  const race = rng.weighted(age >= 60 ? olderRaceWeights : raceWeights);
  return { sex, age, race };
}

export function sampleHabitus(demographics: Demographics, rng: Rng): Habitus {
  const { age, sex, race } = demographics;
  const shift = RACE_HABITUS_SHIFT[race];
  const female = sex === "female";
  const growth = Math.min(1, age / 17);
  // Children's chests are smaller in the field of view, so more neck and abdomen show.
  const thoraxScale =
    (0.66 + 0.34 * growth ** 0.8) *
    rng.clampedNormal(1 + shift.thoraxScale + (female ? -0.03 : 0.03), 0.04, 0.85, 1.15);
  const middleAge = Math.exp(-(((age - 55) / 20) ** 2));
  const softTissue = rng.clampedNormal(
    0.8 + 0.2 * growth + 0.12 * middleAge + shift.softTissue + (female ? 0.04 : 0),
    0.17,
    0.6,
    1.7,
  );
  const puberty = Math.min(1, Math.max(0, (age - 12) / 6));
  const breast = female
    ? puberty * rng.clampedNormal(0.85 + 0.5 * (softTissue - 1) + shift.breast, 0.25, 0.15, 1.6)
    : 0;
  // Peak bone mass in young adults; loss after 45, faster in women (menopause).
  const childhood = 0.62 + 0.38 * growth;
  const loss = Math.max(0, age - 45) * (female ? 0.0085 : 0.004);
  const boneDensity = rng.clampedNormal(childhood - loss + shift.boneDensity, 0.05, 0.4, 1.25);
  const cartilageCalcification =
    age < 30 ? 0 : Math.min(1, Math.max(0, rng.normal((age - 30) / 55, 0.12) * (female ? 0.85 : 1)));
  return { thoraxScale, softTissue, breast, boneDensity, cartilageCalcification };
}

/** Heart geometry in body units for a given drawn cardiothoracic ratio. */
export function heartGeometry(
  ratio: number,
  shape: HeartShape,
  lungHeight: Anatomy["lungHeight"],
  domeRise: Anatomy["domeRise"],
): Anatomy["heart"] {
  const highestDome = Math.min(lungHeight.right - domeRise.right, lungHeight.left - domeRise.left);
  const halfHeight = 0.4 + 0.5 * (ratio - 0.44);
  return {
    halfWidth: ratio,
    halfHeight,
    centerX: ratio * (1 - 2 * shape.rightFraction),
    // The widest row sits well above the higher dome, so that the silhouette narrows again before it
    // meets the diaphragm (the cardiophrenic angles); the lowest part hides in the abdominal density.
    centerY: highestDome - 0.24,
    shear: shape.shear,
  };
}

export function sampleAnatomy(
  demographics: Demographics,
  habitus: Habitus,
  rng: Rng,
): { anatomy: Anatomy; heartShape: HeartShape } {
  const { age, sex } = demographics;
  const growth = Math.min(1, age / 16);
  const elderly = logistic((age - 68) / 8);
  const rightHeight = rng.clampedNormal(
    1.5 - 0.1 * (1 - growth) + 0.06 * elderly - 0.05 * (habitus.softTissue - 1),
    0.05,
    1.3,
    1.7,
  );
  const lungHeight = { right: rightHeight, left: rightHeight + rng.uniform(0.01, 0.05) };
  // Flatter domes with age (hyperinflation).
  const rightRise = rng.clampedNormal(0.3, 0.03, 0.2, 0.4) * (1 - 0.2 * elderly);
  const domeRise = { right: rightRise, left: rightRise - rng.uniform(0.02, 0.06) };
  const heartShape: HeartShape = {
    normalRatio: rng.clampedNormal(
      0.44 + 0.035 * (1 - growth) + (sex === "female" ? 0.01 : 0),
      0.022,
      0.37,
      0.49,
    ),
    rightFraction: rng.uniform(0.29, 0.35),
    shear: rng.clampedNormal(0.25, 0.06, 0.1, 0.4),
  };
  const anatomy: Anatomy = {
    lungHeight,
    domeRise,
    mediastinumHalfWidth: rng.clampedNormal(0.15 + 0.02 * (age / 90), 0.012, 0.12, 0.2),
    aorticKnob: rng.clampedNormal(0.025 + 0.055 * (age / 90), 0.01, 0.005, 0.1),
    thymus: age < 4 ? (1 - age / 4) * rng.uniform(0.5, 1) : 0,
    heart: heartGeometry(heartShape.normalRatio, heartShape, lungHeight, domeRise),
    ribs: {
      spacing: (rightHeight / 9.6) * rng.uniform(0.97, 1.03),
      halfWidth: rng.clampedNormal(0.042, 0.003, 0.034, 0.05),
      // Children's ribs run more horizontally.
      slope: (0.3 + 0.3 * growth) * rng.uniform(0.9, 1.1),
      firstY: rng.uniform(-0.05, 0),
      count: 11,
    },
    clavicleY: rng.clampedNormal(0.12, 0.025, 0.05, 0.2),
    spineHalfWidth: 0.11 * rng.uniform(0.93, 1.07),
    gastricBubble: rng.chance(0.8)
      ? {
          x: rng.uniform(0.35, 0.6),
          y: lungHeight.left - domeRise.left + rng.uniform(0.1, 0.16),
          radius: rng.uniform(0.05, 0.12),
        }
      : null,
    textureSeed: rng.nextUint32(),
  };
  return { anatomy, heartShape };
}

/** Chronic conditions are decided once per patient, at the age of the first study. */
export function sampleChronicConditions(
  demographics: Demographics,
  institution: InstitutionProfile,
  rng: Rng,
): Condition[] {
  const present: Condition[] = [];
  for (const condition of CONDITIONS) {
    if (!CHRONIC_CONDITIONS.has(condition)) continue;
    const rate =
      baseConditionRate(condition, demographics.age, demographics.sex) *
      (institution.conditionRates[condition] ?? 1);
    if (rng.chance(Math.min(0.95, rate))) present.push(condition);
  }
  return present;
}

export function samplePatient(institution: InstitutionProfile, rng: Rng): SampledPatient {
  const demographics = sampleDemographics(institution, rng);
  const habitus = sampleHabitus(demographics, rng);
  const { anatomy, heartShape } = sampleAnatomy(demographics, habitus, rng);
  const chronicConditions = sampleChronicConditions(demographics, institution, rng);
  return { demographics, habitus, anatomy, heartShape, chronicConditions };
}
