/**
 * Does every finding kind change the pixels by more than the noise, at the sizes the quickstart (64
 * px) and a study at 128 px use? For each kind, films that carry it are rendered with and without
 * it (same patient, same noise seed, so the difference is the finding alone), and again with another
 * noise seed to measure the film's own per-pixel noise sigma. The detectability of the known
 * signal in that noise (the ideal observer's d') is
 *
 *   d' = sqrt(sum over pixels of (with - without)^2) / sigma,  sigma^2 = mean((with - twin)^2) / 2,
 *
 * and the Rose criterion counts a signal as visible at d' >= 5. Cardiomegaly is drawn through the
 * heart's geometry, so "without" redraws the same heart at a normal ratio of 0.46. The kinds below
 * the criterion at a size are listed in BELOW_NOISE and in packages/data/README.md ("Visibility");
 * the test checks both lists, so the README cannot drift from the pixels.
 */
import { describe, expect, it } from "vitest";
import { planPhantomCohort } from "../../packages/data/src/phantom/cohort.ts";
import { institutionIds } from "../../packages/data/src/phantom/institutions.ts";
import { renderPhantom } from "../../packages/data/src/phantom/render/index.ts";
import { heartGeometry } from "../../packages/data/src/phantom/sample/patient.ts";
import type { Finding, PhantomParameters } from "../../packages/data/src/phantom/types.ts";

const SIZES = [64, 128] as const;
const FILMS_PER_KIND = 5;
const ROSE = 5;
/** Kinds whose median d' is below the Rose criterion, by size (mirrors packages/data/README.md). */
const BELOW_NOISE: Record<number, readonly string[]> = { 64: ["fracture"], 128: [] };

function detectability(withFinding: PhantomParameters, without: PhantomParameters, size: number): number {
  const a = renderPhantom(withFinding, size);
  const b = renderPhantom(without, size);
  const { noise } = withFinding.acquisition;
  const twin = renderPhantom(
    {
      ...withFinding,
      acquisition: { ...withFinding.acquisition, noise: { ...noise, seed: noise.seed + 1 } },
    },
    size,
  );
  let signal = 0;
  let noiseSquares = 0;
  for (let index = 0; index < a.length; index++) {
    signal += (a[index] - b[index]) ** 2;
    noiseSquares += (a[index] - twin[index]) ** 2;
  }
  return Math.sqrt(signal) / Math.sqrt(noiseSquares / a.length / 2);
}

function withoutFinding(parameters: PhantomParameters, finding: Finding): PhantomParameters {
  if (finding.kind === "cardiomegaly") {
    const { heart, lungHeight, domeRise } = parameters.anatomy;
    const shape = {
      normalRatio: 0.46,
      rightFraction: (1 - heart.centerX / heart.halfWidth) / 2,
      shear: heart.shear,
    };
    return {
      ...parameters,
      findings: parameters.findings.filter((other) => other !== finding),
      anatomy: { ...parameters.anatomy, heart: heartGeometry(0.46, shape, lungHeight, domeRise) },
    };
  }
  return { ...parameters, findings: parameters.findings.filter((other) => other !== finding) };
}

describe("every finding kind against the noise", () => {
  const cohort = planPhantomCohort({ count: 1500, institutions: institutionIds(), seed: 11 });
  const films = new Map<string, { parameters: PhantomParameters; finding: Finding | null }[]>();
  for (const study of cohort) {
    for (const finding of study.parameters.findings) {
      const list = films.get(finding.kind) ?? [];
      if (list.length < FILMS_PER_KIND) list.push({ parameters: study.parameters, finding });
      films.set(finding.kind, list);
    }
  }
  const withDevices = cohort.filter((study) => study.parameters.devices.length > 0).slice(0, FILMS_PER_KIND);
  films.set(
    "devices",
    withDevices.map((study) => ({ parameters: study.parameters, finding: null })),
  );

  it("covers every finding kind the phantom draws", () => {
    expect([...films.keys()].sort()).toEqual(
      [
        "atelectasis",
        "cardiomegaly",
        "consolidation",
        "devices",
        "edema",
        "fracture",
        "lesion",
        "mediastinalWidening",
        "opacity",
        "pleuralEffusion",
        "pleuralThickening",
        "pneumothorax",
      ].sort(),
    );
    for (const list of films.values()) expect(list.length).toBe(FILMS_PER_KIND);
  });

  for (const size of SIZES) {
    const exceptions = BELOW_NOISE[size].length > 0 ? ` except ${BELOW_NOISE[size].join(", ")}` : "";
    it(`at ${size} px: median d' >= ${ROSE} for every kind${exceptions}`, () => {
      const lines: string[] = [];
      for (const [kind, list] of films) {
        const values = list
          .map(({ parameters, finding }) =>
            detectability(
              parameters,
              finding === null ? { ...parameters, devices: [] } : withoutFinding(parameters, finding),
              size,
            ),
          )
          .sort((a, b) => a - b);
        const median = values[Math.floor(values.length / 2)];
        lines.push(
          `${kind}: median ${median.toFixed(1)} (${values.map((value) => value.toFixed(1)).join(", ")})`,
        );
        if (BELOW_NOISE[size].includes(kind)) expect(median, `${kind} at ${size} px`).toBeLessThan(ROSE);
        else expect(median, `${kind} at ${size} px`).toBeGreaterThanOrEqual(ROSE);
      }
      console.log(`d' at ${size} px\n  ${lines.join("\n  ")}`);
    });
  }
});
