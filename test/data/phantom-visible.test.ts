import { describe, expect, it } from "vitest";
import { type PhantomStudy, planPhantomCohort } from "../../packages/data/src/phantom/cohort.ts";
import { measureCardiothoracicRatio } from "../../packages/data/src/phantom/measure.ts";
import { bodyFrame } from "../../packages/data/src/phantom/render/frame.ts";
import { renderPhantom } from "../../packages/data/src/phantom/render/index.ts";
import { heartGeometry } from "../../packages/data/src/phantom/sample/patient.ts";
import type { Finding, PhantomParameters, Side } from "../../packages/data/src/phantom/types.ts";

const SIZE = 128;
/** Findings that hide a heart border or a lung base: a radiologist would not measure the ratio there. */
const OBSCURING = new Set<Finding["kind"]>([
  "pleuralEffusion",
  "consolidation",
  "opacity",
  "edema",
  "atelectasis",
]);

/** Spearman's rank correlation: robust to the rare film whose borders the measurement misreads. */
function rankCorrelation(xs: readonly number[], ys: readonly number[]): number {
  const ranks = (values: readonly number[]) => {
    const order = values.map((value, index) => [value, index] as const).sort((a, b) => a[0] - b[0]);
    const result = new Array<number>(values.length);
    order.forEach(([, index], rank) => {
      result[index] = rank;
    });
    return result;
  };
  return correlation(ranks(xs), ranks(ys));
}

function correlation(xs: readonly number[], ys: readonly number[]): number {
  const mean = (values: readonly number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
  const mx = mean(xs);
  const my = mean(ys);
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < xs.length; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
    syy += (ys[i] - my) ** 2;
  }
  return sxy / Math.sqrt(sxx * syy);
}

/**
 * Mean pixel value over the part of the image whose body coordinates fall in a box on one side
 * (u: 0 at the midline, 1 at the chest wall; y: depth below the apices, as a fraction of the lung height).
 */
function regionMean(
  image: Float32Array,
  parameters: PhantomParameters,
  side: Side,
  lateral: [number, number],
  depth: [number, number],
): number {
  const frame = bodyFrame(parameters.acquisition, SIZE);
  const height = parameters.anatomy.lungHeight[side];
  let sum = 0;
  let count = 0;
  for (let row = 0; row < SIZE; row++) {
    for (let col = 0; col < SIZE; col++) {
      const x = frame.x0 + col * frame.dxdCol + row * frame.dxdRow;
      const y = frame.y0 + col * frame.dydCol + row * frame.dydRow;
      const u = side === "right" ? -x : x;
      if (u < lateral[0] || u > lateral[1] || y < depth[0] * height || y > depth[1] * height) continue;
      sum += image[row * SIZE + col];
      count++;
    }
  }
  if (count === 0) throw new Error("empty region");
  return sum / count;
}

const cohort = planPhantomCohort({
  count: 260,
  institutions: ["northgate", "riverside", "harbor"],
  seed: 77,
});
const rendered = new Map<PhantomStudy, Float32Array>(
  cohort.map((study) => [study, renderPhantom(study.parameters, SIZE)]),
);
const normalAdults = cohort.filter(
  (study) =>
    study.parameters.findings.length === 0 &&
    study.parameters.acquisition.view === "PA" &&
    study.demographics.age >= 20,
);

describe("the cardiothoracic ratio measured from the pixels", () => {
  it("tracks the Cardiomegaly label on PA films", () => {
    const pa = cohort.filter((study) => study.parameters.acquisition.view === "PA");
    const measured = pa.map((study) => measureCardiothoracicRatio(rendered.get(study)!, SIZE));
    expect(measured.filter((m) => m === null).length).toBeLessThanOrEqual(pa.length * 0.02);
    let agree = 0;
    let counted = 0;
    const positives: number[] = [];
    const negatives: number[] = [];
    pa.forEach((study, index) => {
      const ratio = measured[index]?.ratio;
      if (ratio === undefined) return;
      counted++;
      if (ratio > 0.5 === (study.labels.Cardiomegaly !== 0)) agree++;
      (study.labels.Cardiomegaly === 1 ? positives : negatives).push(ratio);
    });
    expect(positives.length).toBeGreaterThan(10);
    const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
    console.log(
      `PA agreement ${agree}/${counted}, mean measured ratio ${mean(positives).toFixed(3)} with cardiomegaly, ${mean(negatives).toFixed(3)} without`,
    );
    expect(agree / counted).toBeGreaterThan(0.9);
    expect(mean(positives)).toBeGreaterThan(mean(negatives) + 0.08);
  });

  it("agrees with the drawn heart where no finding hides its borders", () => {
    const clear = cohort.filter((study) =>
      study.parameters.findings.every((finding) => !OBSCURING.has(finding.kind)),
    );
    const drawn: number[] = [];
    const measured: number[] = [];
    for (const study of clear) {
      const measurement = measureCardiothoracicRatio(rendered.get(study)!, SIZE);
      if (measurement === null) continue;
      drawn.push(study.parameters.anatomy.heart.halfWidth);
      measured.push(measurement.ratio);
    }
    expect(drawn.length).toBeGreaterThan(clear.length * 0.97);
    expect(rankCorrelation(drawn, measured)).toBeGreaterThan(0.85);
    const errors = drawn.map((value, index) => Math.abs(measured[index] - value)).sort((a, b) => a - b);
    expect(errors[Math.floor(errors.length * 0.9)]).toBeLessThan(0.05);
  });

  it("grows with the heart of one patient, crossing 0.5 where the drawn ratio does", () => {
    const base = normalAdults[0].parameters;
    const shape = { normalRatio: 0.44, rightFraction: 0.32, shear: base.anatomy.heart.shear };
    const ratios = [0.4, 0.46, 0.54, 0.62];
    const measured = ratios.map((ratio) => {
      const parameters = structuredClone(base);
      parameters.anatomy.heart = heartGeometry(
        ratio,
        shape,
        parameters.anatomy.lungHeight,
        parameters.anatomy.domeRise,
      );
      return measureCardiothoracicRatio(renderPhantom(parameters, SIZE), SIZE)!.ratio;
    });
    console.log(
      `drawn ${ratios.join(", ")} -> measured ${measured.map((value) => value.toFixed(3)).join(", ")}`,
    );
    for (let i = 1; i < measured.length; i++) expect(measured[i]).toBeGreaterThan(measured[i - 1]);
    for (const [index, ratio] of ratios.entries())
      expect(Math.abs(measured[index] - ratio)).toBeLessThan(0.025);
    expect(measured[1]).toBeLessThan(0.5);
    expect(measured[2]).toBeGreaterThan(0.5);
  });
});

describe("findings drawn where a radiologist looks", () => {
  const patients = normalAdults.slice(0, 12);
  // Around the lateral costophrenic angle: where fluid collects first in an upright patient.
  const costophrenic: [number, number] = [0.72, 0.98];
  const base: [number, number] = [0.8, 0.98];

  it("a pleural effusion brightens its costophrenic angle and leaves the other side alone", () => {
    expect(patients.length).toBeGreaterThanOrEqual(8);
    const brightening: number[] = [];
    for (const study of patients) {
      const effusion: Finding = {
        kind: "pleuralEffusion",
        side: "right",
        severity: "moderate",
        reported: "positive",
        height: 0.2,
        meniscus: 0.18,
        veil: 0,
      };
      const withEffusion = { ...study.parameters, findings: [effusion] };
      const before = rendered.get(study)!;
      const after = renderPhantom(withEffusion, SIZE);
      const right =
        regionMean(after, withEffusion, "right", costophrenic, base) -
        regionMean(before, study.parameters, "right", costophrenic, base);
      const left =
        regionMean(after, withEffusion, "left", costophrenic, base) -
        regionMean(before, study.parameters, "left", costophrenic, base);
      brightening.push(right);
      expect(Math.abs(left)).toBeLessThan(0.005);
    }
    console.log(
      `effusion brightens the right costophrenic angle by ${brightening.map((value) => value.toFixed(3)).join(", ")}`,
    );
    expect(Math.min(...brightening)).toBeGreaterThan(0.06);
  });

  it("effusion-positive films are brighter at the lung bases than negative ones", () => {
    const upright = cohort.filter((study) => !study.parameters.acquisition.supine);
    const baseBrightness = (study: PhantomStudy) =>
      Math.max(
        regionMean(rendered.get(study)!, study.parameters, "right", costophrenic, base),
        regionMean(rendered.get(study)!, study.parameters, "left", costophrenic, base),
      );
    const positive = upright.filter((study) => study.labels["Pleural Effusion"] === 1).map(baseBrightness);
    const negative = upright.filter((study) => study.labels["Pleural Effusion"] === 0).map(baseBrightness);
    const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
    expect(positive.length).toBeGreaterThan(8);
    expect(mean(positive)).toBeGreaterThan(mean(negative) + 0.03);
  });

  it("a pneumothorax darkens the apex and chest-wall rim and removes its lung markings", () => {
    for (const study of patients.slice(0, 6)) {
      const pneumothorax: Finding = {
        kind: "pneumothorax",
        side: "left",
        severity: "moderate",
        reported: "positive",
        collapse: 0.3,
      };
      const collapsed = { ...study.parameters, findings: [pneumothorax] };
      const before = rendered.get(study)!;
      const after = renderPhantom(collapsed, SIZE);
      const rim: [number, number] = [0.78, 0.95];
      const upper: [number, number] = [0.2, 0.55];
      expect(regionMean(after, collapsed, "left", rim, upper)).toBeLessThan(
        regionMean(before, study.parameters, "left", rim, upper) - 0.02,
      );
      expect(
        Math.abs(
          regionMean(after, collapsed, "right", rim, upper) -
            regionMean(before, study.parameters, "right", rim, upper),
        ),
      ).toBeLessThan(0.005);
    }
  });
});

describe("demographics that change the image", () => {
  it("breast tissue brightens the lower lateral lung zones", () => {
    const woman = normalAdults.find(
      (study) => study.demographics.sex === "female" && study.parameters.habitus.breast > 0.5,
    )!;
    const flat = structuredClone(woman.parameters);
    flat.habitus.breast = 0;
    const lowerLateral: [number, number] = [0.5, 0.9];
    const lowerZone: [number, number] = [0.65, 0.85];
    const withBreast = regionMean(rendered.get(woman)!, woman.parameters, "left", lowerLateral, lowerZone);
    const without = regionMean(renderPhantom(flat, SIZE), flat, "left", lowerLateral, lowerZone);
    expect(withBreast).toBeGreaterThan(without + 0.03);
  });

  it("children's thoraxes fill less of the image than adults'", () => {
    const children = planPhantomCohort({ count: 120, institutions: ["valley"], seed: 3 }).filter(
      (study) => study.demographics.age < 8 && study.parameters.findings.length === 0,
    );
    expect(children.length).toBeGreaterThan(3);
    const widths = (images: Float32Array[]) =>
      images.flatMap((image) => {
        const measurement = measureCardiothoracicRatio(image, SIZE);
        return measurement === null ? [] : [measurement.thoraxWidth];
      });
    const childWidths = widths(children.map((study) => renderPhantom(study.parameters, SIZE)));
    const adultWidths = widths(normalAdults.slice(0, 20).map((study) => rendered.get(study)!));
    expect(childWidths.length).toBeGreaterThan(3);
    const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
    expect(mean(childWidths)).toBeLessThan(0.85 * mean(adultWidths));
  });
});
