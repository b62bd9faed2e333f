/**
 * Per-institution statistics of a planned cohort: demographic mix, view mix and label prevalence.
 * The CLI prints them, and the tests use them to check that institutions really differ.
 */
import { CHEXPERT_LABELS, type ChexpertLabel, RACES, type Race, SPLITS, type Split } from "../records.ts";
import type { PhantomStudy } from "./cohort.ts";

export interface GroupStatistics {
  images: number;
  patients: number;
  femaleShare: number;
  /** Share of images of patients aged 60 or older. */
  olderShare: number;
  /** Share of images of women aged 60 or older. */
  olderFemaleShare: number;
  raceShare: Record<Race, number>;
  apShare: number;
  /** Share of images with each label positive (1). */
  positiveShare: Record<ChexpertLabel, number>;
  /** Share of images with each label uncertain (-1). */
  uncertainShare: Record<ChexpertLabel, number>;
}

function groupStatistics(studies: readonly PhantomStudy[]): GroupStatistics {
  const images = studies.length;
  const share = (predicate: (study: PhantomStudy) => boolean) =>
    images === 0 ? 0 : studies.filter(predicate).length / images;
  const raceShare = {} as Record<Race, number>;
  for (const race of RACES) raceShare[race] = share((study) => study.demographics.race === race);
  const positiveShare = {} as Record<ChexpertLabel, number>;
  const uncertainShare = {} as Record<ChexpertLabel, number>;
  for (const label of CHEXPERT_LABELS) {
    positiveShare[label] = share((study) => study.labels[label] === 1);
    uncertainShare[label] = share((study) => study.labels[label] === -1);
  }
  return {
    images,
    patients: new Set(studies.map((study) => study.patientId)).size,
    femaleShare: share((study) => study.demographics.sex === "female"),
    olderShare: share((study) => study.demographics.age >= 60),
    olderFemaleShare: share((study) => study.demographics.age >= 60 && study.demographics.sex === "female"),
    raceShare,
    apShare: share((study) => study.parameters.acquisition.view === "AP"),
    positiveShare,
    uncertainShare,
  };
}

export interface CohortStatistics {
  overall: GroupStatistics;
  byInstitution: Record<string, GroupStatistics>;
  bySplit: Record<Split, GroupStatistics>;
}

export function cohortStatistics(studies: readonly PhantomStudy[]): CohortStatistics {
  const byInstitution: Record<string, GroupStatistics> = {};
  for (const institution of [...new Set(studies.map((study) => study.institution))]) {
    byInstitution[institution] = groupStatistics(
      studies.filter((study) => study.institution === institution),
    );
  }
  const bySplit = {} as Record<Split, GroupStatistics>;
  for (const split of SPLITS)
    bySplit[split] = groupStatistics(studies.filter((study) => study.split === split));
  return { overall: groupStatistics(studies), byInstitution, bySplit };
}
