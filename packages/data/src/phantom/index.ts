/** The procedural chest-radiograph phantom: sampling, rendering, measuring and writing datasets. */

export {
  DEFAULT_SPLIT_FRACTIONS,
  type PhantomCohortOptions,
  type PhantomStudy,
  planPhantomCohort,
} from "./cohort.ts";
export { CONDITIONS, type Condition } from "./conditions.ts";
export {
  CSV_COLUMNS,
  generatePhantomDataset,
  PHANTOM_FORMAT_VERSION,
  type PhantomDatasetOptions,
  type PhantomDatasetSummary,
  phantomDatasetOptionsSchema,
} from "./dataset.ts";
export { findInstitution, INSTITUTIONS, type InstitutionProfile, institutionIds } from "./institutions.ts";
export { labelsFromFindings } from "./labels.ts";
export { type LungZoneMeasurement, type LungZones, measureLungZones } from "./lung-zones.ts";
export { type CardiothoracicMeasurement, measureCardiothoracicRatio } from "./measure.ts";
export { PHANTOM_SIZES, type PhantomSize, renderPhantom } from "./render/index.ts";
export { writeImpression, writePrompt } from "./report.ts";
export { RACE_HABITUS_SHIFT } from "./sample/patient.ts";
export { type CohortStatistics, cohortStatistics, type GroupStatistics } from "./statistics.ts";
export type * from "./types.ts";
