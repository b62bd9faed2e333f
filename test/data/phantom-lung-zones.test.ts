/**
 * The lung-zone measures (`measureLungZones`) on rendered phantom films: the lateral lung depth falls
 * when an effusion is drawn into the same patient, the lower-zone ratio rises with breast tissue, and
 * across a cohort each separates its classes; bad input gets a clear error.
 */
import { describe, expect, it } from "vitest";
import { type PhantomStudy, planPhantomCohort } from "../../packages/data/src/phantom/cohort.ts";
import { measureLungZones } from "../../packages/data/src/phantom/lung-zones.ts";
import { measureCardiothoracicRatio } from "../../packages/data/src/phantom/measure.ts";
import { renderPhantom } from "../../packages/data/src/phantom/render/index.ts";
import type { Finding, PhantomParameters } from "../../packages/data/src/phantom/types.ts";

const SIZE = 64;

function auroc(positives: readonly number[], negatives: readonly number[]): number {
  let wins = 0;
  for (const p of positives) for (const q of negatives) wins += p > q ? 1 : p === q ? 0.5 : 0;
  return wins / (positives.length * negatives.length);
}

const cohort = planPhantomCohort({ count: 700, institutions: ["northgate", "harbor"], seed: 31 });
const normalAdults = cohort.filter(
  (study) =>
    study.parameters.findings.length === 0 &&
    study.parameters.devices.length === 0 &&
    study.parameters.acquisition.view === "PA" &&
    study.demographics.age >= 25,
);

function withFindings(parameters: PhantomParameters, findings: Finding[]): PhantomParameters {
  return { ...parameters, findings };
}

function effusion(side: "right" | "left", height: number, meniscus: number): Finding {
  return {
    kind: "pleuralEffusion",
    side,
    severity: "moderate",
    reported: "positive",
    height,
    meniscus,
    veil: 0,
  };
}

function zones(parameters: PhantomParameters) {
  const measurement = measureLungZones(renderPhantom(parameters, SIZE), SIZE);
  if (measurement === null) throw new Error("lungs not segmented");
  return measurement;
}

describe("lateral lung depth (pleural effusion)", () => {
  it("is shallower on the side an effusion is drawn, in the same patient", () => {
    expect(normalAdults.length).toBeGreaterThan(12);
    const drops: number[] = [];
    const otherSide: number[] = [];
    const imageDrops: number[] = [];
    for (const study of normalAdults.slice(0, 12)) {
      const clear = zones(study.parameters);
      const right = zones(withFindings(study.parameters, [effusion("right", 0.2, 0.2)]));
      const left = zones(withFindings(study.parameters, [effusion("left", 0.2, 0.2)]));
      // Every patient's effusion side gets shallower.
      expect(right.right.lateralDepth).toBeLessThan(clear.right.lateralDepth - 0.01);
      expect(left.left.lateralDepth).toBeLessThan(clear.left.lateralDepth - 0.01);
      imageDrops.push(clear.lateralDepth - right.lateralDepth, clear.lateralDepth - left.lateralDepth);
      drops.push(
        clear.right.lateralDepth - right.right.lateralDepth,
        clear.left.lateralDepth - left.left.lateralDepth,
      );
      otherSide.push(
        Math.abs(right.left.lateralDepth - clear.left.lateralDepth),
        Math.abs(left.right.lateralDepth - clear.right.lateralDepth),
      );
    }
    const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
    console.log(
      `effusion side shallower by ${mean(drops).toFixed(3)} thorax widths on average (${Math.min(...drops).toFixed(3)}-${Math.max(...drops).toFixed(3)}), the other side moves ${mean(otherSide).toFixed(3)}`,
    );
    // Fluid climbing 0.2-0.4 body units (of a 2-unit thorax) up the wall: about 1/15 of the thorax
    // width on average at 64 px, several times what the untouched lung moves.
    expect(mean(drops)).toBeGreaterThan(0.05);
    expect(mean(drops)).toBeGreaterThan(2 * mean(otherSide));
    // The image's value (the shallower lung) follows on average.
    expect(mean(imageDrops)).toBeGreaterThan(0.03);
  });

  it("separates the cohort's Pleural Effusion films from its No Finding films", () => {
    const depth = (studies: PhantomStudy[]) =>
      studies.flatMap((study) => {
        const measurement = measureLungZones(renderPhantom(study.parameters, SIZE), SIZE);
        return measurement ? [measurement.lateralDepth] : [];
      });
    const positives = depth(cohort.filter((study) => study.labels["Pleural Effusion"] === 1));
    const negatives = depth(cohort.filter((study) => study.labels["No Finding"] === 1));
    expect(positives.length).toBeGreaterThan(30);
    // Oriented as the measure reads: the effusion films' lateral depth is the lower one.
    const separation = auroc(negatives, positives);
    console.log(`lateral depth AUROC ${separation.toFixed(3)} (${positives.length} vs ${negatives.length})`);
    expect(separation).toBeGreaterThan(0.65);
  });
});

describe("lower-zone ratio (sex)", () => {
  it("rises with breast tissue over the lower lung fields, in the same patient", () => {
    const rises: number[] = [];
    const depthChanges: number[] = [];
    for (const study of normalAdults.slice(0, 12)) {
      const habitus = study.parameters.habitus;
      const without = zones({ ...study.parameters, habitus: { ...habitus, breast: 0 } });
      const withBreasts = zones({ ...study.parameters, habitus: { ...habitus, breast: 1 } });
      expect(withBreasts.lowerZoneRatio!).toBeGreaterThan(without.lowerZoneRatio! + 0.05);
      rises.push(withBreasts.lowerZoneRatio! - without.lowerZoneRatio!);
      depthChanges.push(withBreasts.lateralDepth - without.lateralDepth);
    }
    const range = (values: number[]) =>
      `${Math.min(...values).toFixed(3)} to ${Math.max(...values).toFixed(3)}`;
    console.log(
      `breast 1 vs 0: lower-zone ratio up ${range(rises)}; lateral depth changes ${range(depthChanges)}`,
    );
  });

  it("separates adult women's No Finding films from men's", () => {
    const ratio = (sex: "female" | "male") =>
      normalAdults
        .filter((study) => study.demographics.sex === sex)
        .flatMap((study) => {
          const value = measureLungZones(renderPhantom(study.parameters, SIZE), SIZE)?.lowerZoneRatio;
          return value === null || value === undefined ? [] : [value];
        });
    const female = ratio("female");
    const male = ratio("male");
    expect(female.length).toBeGreaterThan(10);
    expect(male.length).toBeGreaterThan(10);
    const separation = auroc(female, male);
    console.log(`lower-zone ratio AUROC ${separation.toFixed(3)} (${female.length} vs ${male.length})`);
    expect(separation).toBeGreaterThan(0.85);
  });
});

describe("measureLungZones input", () => {
  const image = renderPhantom(normalAdults[0].parameters, SIZE);

  it("reuses the CTR measurement it is given and agrees with measuring afresh", () => {
    const ctr = measureCardiothoracicRatio(image, SIZE);
    expect(measureLungZones(image, SIZE, ctr)).toEqual(measureLungZones(image, SIZE));
    expect(measureLungZones(image, SIZE, null)).toBeNull();
  });

  it("returns null where no lungs can be segmented", () => {
    expect(measureLungZones(new Float32Array(SIZE * SIZE).fill(0.5), SIZE)).toBeNull();
  });

  it("names what is wrong with bad input", () => {
    expect(() => measureLungZones(image, 63)).toThrow(
      "measureLungZones: image has 4096 pixels, expected 63x63 = 3969",
    );
    expect(() => measureLungZones(image, 6.5)).toThrow(
      "measureLungZones: size must be an integer of at least 8 pixels, got 6.5",
    );
    const broken = Float32Array.from(image);
    broken[3 * SIZE + 5] = Number.NaN;
    expect(() => measureLungZones(broken, SIZE)).toThrow(
      "measureLungZones: pixel 197 (row 3, column 5) is NaN",
    );
    const ctr = measureCardiothoracicRatio(image, SIZE)!;
    expect(() => measureLungZones(image, SIZE, { ...ctr, lungMask: new Uint8Array(10) })).toThrow(
      "measureLungZones: the CTR measurement's lung mask has 10 pixels, the image 4096",
    );
  });
});
