import { describe, expect, it } from "vitest";
import { type PhantomStudy, planPhantomCohort } from "../../packages/data/src/phantom/cohort.ts";
import { institutionIds } from "../../packages/data/src/phantom/institutions.ts";
import { labelsFromFindings } from "../../packages/data/src/phantom/labels.ts";
import { cohortStatistics } from "../../packages/data/src/phantom/statistics.ts";
import { Rng } from "../../packages/data/src/random.ts";
import { CHEXPERT_LABELS, type ChexpertLabel } from "../../packages/data/src/records.ts";

const PATHOLOGIES = CHEXPERT_LABELS.filter((label) => label !== "No Finding" && label !== "Support Devices");

// Planning draws no pixels, so a large cohort is cheap.
const studies = planPhantomCohort({ count: 6000, institutions: institutionIds(), seed: 2024 });
const statistics = cohortStatistics(studies);

function share(group: readonly PhantomStudy[], predicate: (study: PhantomStudy) => boolean): number {
  return group.filter(predicate).length / group.length;
}

const positive = (label: ChexpertLabel) => (study: PhantomStudy) => study.labels[label] === 1;

describe("phantom labels", () => {
  it("sets No Finding exactly when no pathology is positive or uncertain", () => {
    const wrong = studies.filter((study) => {
      const pathology = PATHOLOGIES.some((label) => study.labels[label] !== 0);
      const noFinding = study.labels["No Finding"];
      return (
        noFinding !== (pathology ? 0 : 1) || (noFinding === 1) !== (study.parameters.findings.length === 0)
      );
    });
    expect(wrong.map((study) => study.path)).toEqual([]);
    expect(share(studies, positive("No Finding"))).toBeGreaterThan(0.3);
    expect(share(studies, positive("No Finding"))).toBeLessThan(0.75);
  });

  it("codes every label 1, 0 or -1 (the phantom draws all 14, so none is blank)", () => {
    const values = new Set(studies.flatMap((study) => CHEXPERT_LABELS.map((label) => study.labels[label])));
    expect([...values].sort()).toEqual([-1, 0, 1]);
  });

  it("marks some subtle findings uncertain, as CheXpert reports do, and hedges them in the impression", () => {
    const uncertain = studies.filter((study) => PATHOLOGIES.some((label) => study.labels[label] === -1));
    expect(uncertain.length / studies.length).toBeGreaterThan(0.02);
    for (const study of studies) {
      for (const finding of study.parameters.findings) {
        if (finding.reported === "uncertain") expect(finding.severity).not.toBe("severe");
      }
    }
    const hedged = uncertain.filter((study) => /possibl/i.test(study.impression));
    expect(hedged.length).toBe(uncertain.length);
  });

  it("turns a drawn finding into its labels, and devices into Support Devices without touching No Finding", () => {
    const effusion = {
      kind: "pleuralEffusion" as const,
      side: "left" as const,
      severity: "mild" as const,
      reported: "uncertain" as const,
      height: 0.03,
      meniscus: 0.1,
      veil: 0,
    };
    const labels = labelsFromFindings([effusion], [{ kind: "endotrachealTube", tipY: 0.3 }], null);
    expect(labels["Pleural Effusion"]).toBe(-1);
    expect(labels["No Finding"]).toBe(0);
    expect(labels["Support Devices"]).toBe(1);
    const devicesOnly = labelsFromFindings([], [{ kind: "endotrachealTube", tipY: 0.3 }], null);
    expect(devicesOnly["No Finding"]).toBe(1);
    expect(devicesOnly["Support Devices"]).toBe(1);
  });

  it("writes impressions and RoentGen-v2 prompts from the findings", () => {
    const mentions: [ChexpertLabel, RegExp][] = [
      ["Cardiomegaly", /cardiomegaly/i],
      ["Pleural Effusion", /pleural effusion/i],
      ["Pneumothorax", /pneumothorax/i],
      ["Edema", /edema/i],
      ["Consolidation", /consolidation/i],
      ["Fracture", /fracture/i],
      ["Lung Lesion", /nodule|mass/i],
      ["Pneumonia", /pneumonia/i],
    ];
    const wrong = studies.filter((study) => {
      const { age, race, sex } = study.demographics;
      if (study.prompt !== `${age} year old ${race} ${sex}. ${study.impression}`) return true;
      const normal = /No acute|Clear lungs/.test(study.impression);
      if (normal !== (study.labels["No Finding"] === 1)) return true;
      return mentions.some(
        ([label, pattern]) => (study.labels[label] !== 0) !== pattern.test(study.impression),
      );
    });
    expect(wrong.map((study) => study.impression)).toEqual([]);
  });

  it("lets findings co-occur as they do clinically, and grow with age", () => {
    const cardiomegaly = studies.filter(positive("Cardiomegaly"));
    const normalHeart = studies.filter((study) => study.labels.Cardiomegaly === 0);
    expect(share(cardiomegaly, positive("Edema"))).toBeGreaterThan(4 * share(normalHeart, positive("Edema")));
    const edema = studies.filter(positive("Edema"));
    expect(share(edema, positive("Pleural Effusion"))).toBeGreaterThan(
      2 * share(studies, positive("Pleural Effusion")),
    );
    const young = studies.filter((study) => study.demographics.age < 40);
    const old = studies.filter((study) => study.demographics.age >= 60);
    expect(share(old, positive("Cardiomegaly"))).toBeGreaterThan(4 * share(young, positive("Cardiomegaly")));
    expect(share(old, positive("No Finding"))).toBeLessThan(share(young, positive("No Finding")) - 0.15);
    // Cardiomegaly is a cardiothoracic ratio above 0.5, in the ground truth as in the label.
    const wrong = studies.filter(
      (study) => study.cardiothoracicRatio > 0.5 !== (study.labels.Cardiomegaly !== 0),
    );
    expect(wrong.map((study) => study.path)).toEqual([]);
  });
});

describe("phantom institutions", () => {
  it("differ in demographic mix, views and disease prevalence", () => {
    const { northgate, riverside, highland, harbor, valley } = statistics.byInstitution;
    // highland is skewed on purpose: few older women and few minority patients.
    expect(highland.olderFemaleShare).toBeLessThan(0.02);
    expect(northgate.olderFemaleShare).toBeGreaterThan(0.15);
    expect(1 - highland.raceShare.WHITE).toBeLessThan(0.15);
    expect(1 - northgate.raceShare.WHITE).toBeGreaterThan(0.35);
    expect(highland.femaleShare).toBeLessThan(northgate.femaleShare - 0.15);
    // riverside is an ICU-heavy hospital: portable AP films, devices, sicker patients.
    expect(riverside.apShare).toBeGreaterThan(0.5);
    expect(highland.apShare).toBeLessThan(0.1);
    expect(riverside.positiveShare["Support Devices"]).toBeGreaterThan(
      2 * northgate.positiveShare["Support Devices"],
    );
    expect(riverside.positiveShare["No Finding"]).toBeLessThan(highland.positiveShare["No Finding"] - 0.2);
    // harbor serves an older, largely Asian and Hispanic community; valley many children.
    expect(harbor.raceShare.ASIAN + harbor.raceShare.HISPANIC).toBeGreaterThan(0.55);
    const children = (institution: string) =>
      share(
        studies.filter((study) => study.institution === institution),
        (study) => study.demographics.age < 20,
      );
    expect(children("valley")).toBeGreaterThan(0.4);
    expect(children("riverside")).toBeLessThan(0.1);
    expect(valley.positiveShare.Cardiomegaly).toBeLessThan(northgate.positiveShare.Cardiomegaly);
  });

  it("differ in acquisition: exposure, noise, blur, edge enhancement and markers", () => {
    const acquisition = (institution: string) =>
      studies
        .filter((study) => study.institution === institution)
        .map((study) => study.parameters.acquisition);
    const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
    const noise = (institution: string) => mean(acquisition(institution).map((a) => a.noise.sigma));
    const blur = (institution: string) => mean(acquisition(institution).map((a) => a.blur));
    expect(noise("riverside")).toBeGreaterThan(2 * noise("highland"));
    expect(blur("riverside")).toBeGreaterThan(2 * blur("highland"));
    expect(acquisition("harbor").every((a) => a.sharpen.amount > 0 && a.collimation > 0)).toBe(true);
    expect(acquisition("northgate").every((a) => a.sharpen.amount === 0)).toBe(true);
    const markerTexts = (institution: string) =>
      new Set(acquisition(institution).flatMap((a) => a.markers.map((m) => m.text)));
    expect(markerTexts("riverside")).toContain("AP PORTABLE");
    expect(markerTexts("highland")).toEqual(new Set(["L"]));
  });
});

describe("phantom splits", () => {
  it("never put one patient in two splits, and split patients in the asked proportions", () => {
    const splitOf = new Map<string, string>();
    const leaks: string[] = [];
    for (const study of studies) {
      const previous = splitOf.get(study.patientId);
      if (previous !== undefined && previous !== study.split) leaks.push(study.patientId);
      if (!study.path.startsWith(`phantom/${study.split}/${study.patientId}/`)) leaks.push(study.path);
      splitOf.set(study.patientId, study.split);
    }
    expect(leaks).toEqual([]);
    const patients = [...splitOf.values()];
    const fraction = (split: string) => patients.filter((value) => value === split).length / patients.length;
    expect(fraction("train")).toBeCloseTo(0.8, 1);
    expect(fraction("valid")).toBeCloseTo(0.1, 1);
    expect(fraction("test")).toBeCloseTo(0.1, 1);
  });

  it("keeps a patient's sex and race across studies, with ages that never go back", () => {
    const byPatient = new Map<string, PhantomStudy[]>();
    for (const study of studies)
      byPatient.set(study.patientId, [...(byPatient.get(study.patientId) ?? []), study]);
    const withFollowUps = [...byPatient.values()].filter((group) => group.length > 1);
    expect(withFollowUps.length).toBeGreaterThan(100);
    for (const group of withFollowUps) {
      expect(new Set(group.map((study) => study.demographics.sex)).size).toBe(1);
      expect(new Set(group.map((study) => study.demographics.race)).size).toBe(1);
      for (let i = 1; i < group.length; i++) {
        expect(group[i].demographics.age).toBeGreaterThanOrEqual(group[i - 1].demographics.age);
      }
    }
  });

  it("does not change one institution's patients when another institution is added", () => {
    const alone = planPhantomCohort({ count: 200, institutions: ["harbor"], seed: 5 });
    const together = planPhantomCohort({ count: 400, institutions: ["northgate", "harbor"], seed: 5 });
    const harbor = together.filter((study) => study.institution === "harbor");
    expect(harbor.map((study) => study.prompt)).toEqual(alone.map((study) => study.prompt));
  });
});

describe("phantom randomness", () => {
  it("derives independent streams from keys, reproducibly", () => {
    const a = Rng.derive(1, "patient", "northgate", 0);
    const b = Rng.derive(1, "patient", "northgate", 0);
    const c = Rng.derive(1, "patient", "northgate", 1);
    const drawsA = Array.from({ length: 5 }, () => a.nextUint32());
    expect(Array.from({ length: 5 }, () => b.nextUint32())).toEqual(drawsA);
    expect(Array.from({ length: 5 }, () => c.nextUint32())).not.toEqual(drawsA);
    const uniform = Rng.derive(9);
    const values = Array.from({ length: 20000 }, () => uniform.next());
    const mean = values.reduce((sum, value) => sum + value, 0) / values.length;
    expect(mean).toBeCloseTo(0.5, 2);
    expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...values)).toBeLessThan(1);
  });
});
