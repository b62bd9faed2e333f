/**
 * Training on single-finding films: `--single-findings "Pleural Effusion,Cardiomegaly,No Finding=130"`
 * keeps only the records whose one finding is a listed one, at most N of a finding where N is given
 * (chosen by the run's seed). In the phantom's reports most effusions come with companions (edema,
 * atelectasis, opacity, a large heart); a model trained on all of them draws the companions for the
 * effusion words more than the fluid. Films with the finding alone show it alone.
 */
import { CHEXPERT_LABELS, type ChexpertLabel, type CxrRecord, Rng } from "@cxr/data";
import { TrainOptionsError } from "./errors.ts";

/** Per listed finding, the most records kept (null: all that qualify). */
export type SingleFindings = Partial<Record<ChexpertLabel, number | null>>;

/** Labels that do not make a film's finding less alone: devices are not findings (as in CheXpert's No Finding). */
const NOT_A_FINDING: readonly ChexpertLabel[] = ["Support Devices"];

/**
 * The one finding of a record: the label that is positive when every other label (Support Devices
 * aside) is neither positive nor uncertain; "No Finding" for a positive No Finding; null otherwise.
 */
export function singleFindingOf(record: Pick<CxrRecord, "labels">): ChexpertLabel | null {
  if (record.labels["No Finding"] === 1) return "No Finding";
  let found: ChexpertLabel | null = null;
  for (const label of CHEXPERT_LABELS) {
    if (label === "No Finding" || NOT_A_FINDING.includes(label)) continue;
    const value = record.labels[label];
    if (value === 1 || value === -1) {
      if (value === -1 || found !== null) return null;
      found = label;
    }
  }
  return found;
}

/** Parses `--single-findings "Pleural Effusion,Cardiomegaly,No Finding=130"` (names case-insensitive). */
export function parseSingleFindings(text: string): SingleFindings {
  const result: SingleFindings = {};
  for (const part of text
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item.length > 0)) {
    const match = /^(.+?)\s*(?:=\s*(\S+))?$/.exec(part);
    const name = match?.[1] ?? part;
    const label = CHEXPERT_LABELS.find((known) => known.toLowerCase() === name.toLowerCase());
    if (label === undefined || NOT_A_FINDING.includes(label)) {
      const known = CHEXPERT_LABELS.filter((known) => !NOT_A_FINDING.includes(known));
      throw new TrainOptionsError(
        `--single-findings: unknown finding "${name}" (one of ${known.join(", ")})`,
      );
    }
    if (label in result) throw new TrainOptionsError(`--single-findings: ${label} is listed twice`);
    const cap = match?.[2];
    if (cap !== undefined && !/^\d+$/.test(cap)) {
      throw new TrainOptionsError(
        `--single-findings: the most records of ${label} must be an integer, got "${cap}"`,
      );
    }
    result[label] = cap === undefined ? null : Number(cap);
  }
  if (Object.keys(result).length === 0) throw new TrainOptionsError("--single-findings: no finding given");
  return result;
}

/** Problems with a `SingleFindings` value (empty when none), for `trainDiffusion`'s option check. */
export function singleFindingsProblems(value: SingleFindings): string[] {
  const problems: string[] = [];
  if (Object.keys(value).length === 0) problems.push("singleFindings lists no finding");
  for (const [label, cap] of Object.entries(value)) {
    if (
      !(CHEXPERT_LABELS as readonly string[]).includes(label) ||
      NOT_A_FINDING.includes(label as ChexpertLabel)
    ) {
      problems.push(`singleFindings: unknown finding "${label}"`);
    }
    if (cap !== null && !(Number.isSafeInteger(cap) && (cap as number) >= 1)) {
      problems.push(
        `singleFindings: the most records of ${label} must be an integer of at least 1, got ${cap}`,
      );
    }
  }
  return problems;
}

export interface SingleFindingSelection {
  /** Indices of the kept records, in record order. */
  kept: number[];
  /** Per listed finding: records kept and records that qualified. */
  counts: { label: ChexpertLabel; kept: number; qualified: number }[];
}

/**
 * The records whose one finding (`singleFindingOf`) is listed; where a finding has a cap below the
 * records that qualify, that many are drawn without replacement from a generator seeded by `seed`,
 * so the same seed keeps the same records.
 */
export function selectSingleFindings(
  records: readonly Pick<CxrRecord, "labels">[],
  wanted: SingleFindings,
  seed: number,
): SingleFindingSelection {
  const rng = Rng.derive("single-findings", seed);
  const kept: number[] = [];
  const counts: SingleFindingSelection["counts"] = [];
  // Each record's one finding, worked out once rather than once per listed finding.
  const findings = records.map(singleFindingOf);
  for (const label of CHEXPERT_LABELS) {
    if (!(label in wanted)) continue;
    const qualified = findings.flatMap((finding, index) => (finding === label ? [index] : []));
    const cap = wanted[label] ?? null;
    const chosen =
      cap === null || qualified.length <= cap ? qualified : rng.shuffle([...qualified]).slice(0, cap);
    kept.push(...chosen);
    counts.push({ label, kept: chosen.length, qualified: qualified.length });
  }
  kept.sort((a, b) => a - b);
  return { kept, counts };
}
