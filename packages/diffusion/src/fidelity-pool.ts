/**
 * Several fidelity reports of one model, sampled alike and differing only in seed, pooled into one:
 * at n 96 a class the interval of a gap to the real films is about +-0.12 wide, and one seed can
 * decide a gap that the next does not. Pooling k seeds gives k times the generated images; the real
 * side is then every film of the split (the reports' own real films are a seeded draw each, and the
 * draws overlap, so adding them up would count films twice).
 */

import {
  againstRealFilms,
  ctrComparison,
  type FidelityMeasureName,
  type FidelityReport,
  type LungDepths,
  type MeasureComparison,
  measureComparison,
  type RealFilmsFidelity,
  withWordings,
} from "./fidelity.ts";
import { byImage, SAMPLER_SETTINGS, settingDifferences, settingOf } from "./fidelity-compare.ts";

/** Settings pooled reports must share (the seed must differ; the real films are measured anew). */
const SHARED_SETTINGS = ["n", "maxBatch", "measureSize", "phrases", "split", "measures"] as const;

/**
 * Checks that `reports` can be pooled: at least two, one model, one resolution, the same settings but
 * for the seed (sampler settings as `settingOf` reads them), and no seed twice (the same images would
 * count twice). Throws an Error naming each report that differs from the first and how.
 */
export function checkPoolable(reports: readonly FidelityReport[], names: readonly string[]): void {
  if (reports.length < 2) {
    throw new RangeError(`fidelity pool: needs at least two reports, got ${reports.length}`);
  }
  const [first, ...rest] = reports;
  const problems: string[] = [];
  rest.forEach((report, offset) => {
    const name = names[offset + 1];
    const differences: string[] = [];
    if (report.model !== first.model) differences.push(`model ${report.model} vs ${first.model}`);
    if (report.resolution !== first.resolution) {
      differences.push(`resolution ${report.resolution} vs ${first.resolution}`);
    }
    differences.push(
      ...settingDifferences(SHARED_SETTINGS, report, first, (each, key) => each.settings?.[key]),
      ...settingDifferences(SAMPLER_SETTINGS, report, first, settingOf),
    );
    if (differences.length > 0) problems.push(`${name} differs from ${names[0]}: ${differences.join("; ")}`);
  });
  const seen = new Map<unknown, string>();
  reports.forEach((report, index) => {
    const seed = report.settings?.seed;
    const earlier = seen.get(seed);
    if (earlier !== undefined) {
      problems.push(`${names[index]} has seed ${seed} like ${earlier}: the same images would count twice`);
    } else seen.set(seed, names[index]);
  });
  if (problems.length > 0) throw new Error(`fidelity pool: ${problems.join("; ")}`);
}

export interface PoolOptions {
  /**
   * The real films' side: every film of the split (`measureRealFilms` with n 10,000 at the reports'
   * resolution and measure size). Absent: the generated side alone.
   */
  real?: RealFilmsFidelity;
  /** The folder `real` was measured from, recorded in the result's settings. */
  realData?: string;
  /** The reports' labels in errors and in the result (default "report 1", "report 2", ...). */
  names?: readonly string[];
}

/**
 * One report from the generated images of `reports` (their per-image values, seed after seed) against
 * the real films in `options.real`. AUROCs, intervals and gaps are computed as `measureFidelity`
 * computes them; `pooled` names the reports and seeds.
 */
export function poolFidelityReports(
  reports: readonly FidelityReport[],
  options: PoolOptions = {},
): FidelityReport {
  const names = options.names ?? reports.map((_, index) => `report ${index + 1}`);
  if (names.length !== reports.length) {
    throw new RangeError(`fidelity pool: ${reports.length} reports but ${names.length} names`);
  }
  checkPoolable(reports, names);
  const pool = (pick: (report: FidelityReport, name: string) => unknown, where: string) =>
    reports.flatMap((report, index) => byImage(pick(report, names[index]), `${names[index]}: ${where}`));
  const generated = ctrComparison(
    pool((report) => report.generated?.cardiomegaly?.byImage, "generated.cardiomegaly"),
    pool((report) => report.generated?.normal?.byImage, "generated.normal"),
  );
  const first = reports[0];
  const measures = first.settings.measures;
  const generatedMeasures = new Map<FidelityMeasureName, MeasureComparison>();
  for (const name of measures) {
    const side = (report: FidelityReport, label: string) => {
      const measure = (report.measures ?? []).find((candidate) => candidate.name === name);
      if (!measure) throw new Error(`${label}: lists ${name} in its settings but holds no ${name} measure`);
      return measure.generated;
    };
    // Each lung's depths pool only when every report holds them (reports before them lack them).
    const hasLungs = reports.every((report, index) => {
      const measure = side(report, names[index]);
      return measure?.positive?.lungs !== undefined && measure?.negative?.lungs !== undefined;
    });
    const lungs = (which: "positive" | "negative"): LungDepths => ({
      right: pool((report, label) => side(report, label)[which].lungs?.right, `${name} ${which} right lung`),
      left: pool((report, label) => side(report, label)[which].lungs?.left, `${name} ${which} left lung`),
    });
    const comparison = measureComparison(
      name,
      pool((report, label) => side(report, label)?.positive?.byImage, `${name} positive`),
      pool((report, label) => side(report, label)?.negative?.byImage, `${name} negative`),
      hasLungs ? { positive: lungs("positive"), negative: lungs("negative") } : undefined,
    );
    generatedMeasures.set(name, withWordings(comparison, first.settings.phrases, first.settings.n));
  }
  const { realData: _measuredFrom, ...settings } = first.settings;
  return {
    model: first.model,
    resolution: first.resolution,
    settings: options.realData === undefined ? settings : { ...settings, realData: options.realData },
    ...againstRealFilms(generated, generatedMeasures, measures, options.real ?? null),
    seconds: reports.reduce((sum, report) => sum + (report.seconds ?? 0), 0),
    pooled: { reports: [...names], seeds: reports.map((report) => report.settings.seed) },
  };
}
