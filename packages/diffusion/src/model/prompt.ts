/**
 * RoentGen-v2 prompts: `"{age} year old {RACE} {sex}. {impression}"` (race optional), e.g.
 * `"72 year old BLACK female. Cardiomegaly and pleural effusion."`. Datasets that carry a report
 * impression (the phantom's Prompt column, a prompt folder) keep it; otherwise the impression is
 * written from the record's CheXpert labels. The normal statement is the phantom's first normal
 * phrasing, "No acute cardiopulmonary abnormality.".
 */
import {
  CHEXPERT_LABELS,
  type ChexpertLabel,
  type CxrRecord,
  formatPrompt,
  parsePrompt,
  type Race,
  type Sex,
} from "@cxr/data";

export const NORMAL_IMPRESSION = "No acute cardiopulmonary abnormality.";

/** How each CheXpert label reads in an impression (lower case; the sentence is capitalised). */
export const FINDING_PHRASES: Readonly<Record<Exclude<ChexpertLabel, "No Finding">, string>> = {
  "Enlarged Cardiomediastinum": "enlarged cardiomediastinum",
  Cardiomegaly: "cardiomegaly",
  "Lung Opacity": "lung opacity",
  "Lung Lesion": "lung lesion",
  Edema: "pulmonary edema",
  Consolidation: "consolidation",
  Pneumonia: "pneumonia",
  Atelectasis: "atelectasis",
  Pneumothorax: "pneumothorax",
  "Pleural Effusion": "pleural effusion",
  "Pleural Other": "pleural abnormality",
  Fracture: "fracture",
  "Support Devices": "support devices",
};

export class PromptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PromptError";
  }
}

export interface PromptFields {
  sex: Sex;
  age: number;
  race?: Race | null;
  /** CheXpert label names (phrased as in `FINDING_PHRASES`) or free phrases; empty: normal. */
  findings: readonly string[];
}

function joinPhrases(phrases: readonly string[]): string {
  if (phrases.length <= 1) return phrases.join("");
  return `${phrases.slice(0, -1).join(", ")} and ${phrases[phrases.length - 1]}`;
}

function phraseOf(finding: string): string {
  const phrase = (FINDING_PHRASES as Record<string, string>)[finding];
  return phrase ?? finding.trim().replace(/\.$/, "");
}

/** The impression sentence for a list of findings ("No acute ..." when there are none). */
export function impressionFromFindings(findings: readonly string[]): string {
  const phrases = findings.filter((finding) => finding !== "No Finding").map(phraseOf);
  if (phrases.length === 0) return NORMAL_IMPRESSION;
  const sentence = joinPhrases(phrases);
  return `${sentence.charAt(0).toUpperCase()}${sentence.slice(1)}.`;
}

function checkDemographics(sex: unknown, age: unknown, where: string): void {
  if (sex !== "female" && sex !== "male") {
    throw new PromptError(`${where}: sex must be "female" or "male", got ${JSON.stringify(sex)}`);
  }
  if (typeof age !== "number" || !Number.isFinite(age) || age < 0 || age > 150) {
    throw new PromptError(`${where}: age must be a number of years in [0, 150], got ${JSON.stringify(age)}`);
  }
}

/** `"{age} year old {RACE} {sex}. {impression}"` from demographics and findings. */
export function promptFromFields(fields: PromptFields): string {
  checkDemographics(fields.sex, fields.age, "promptFromFields");
  return formatPrompt({
    age: Math.round(fields.age),
    race: fields.race ?? null,
    sex: fields.sex,
    impression: impressionFromFindings(fields.findings),
  });
}

/**
 * The prompt's demographic sentence alone, without an impression ("72 year old BLACK female."): e.g. a
 * negative prompt that leaves the demographics out of the guidance.
 */
export function patientSentence(fields: Omit<PromptFields, "findings">): string {
  checkDemographics(fields.sex, fields.age, "patientSentence");
  return formatPrompt({
    age: Math.round(fields.age),
    race: fields.race ?? null,
    sex: fields.sex,
    impression: "",
  }).trim();
}

/** Where a negative prompt names the image's own patient (`negativePromptFor`). */
export const PATIENT_PLACEHOLDER = "{patient}";

/**
 * A negative prompt for one prompt: `template` with each `{patient}` replaced by the prompt's
 * demographic sentence (`patientSentence`; a text prompt must follow the RoentGen-v2 template).
 * "{patient}" alone makes classifier-free guidance amplify the impression only: the demographics are
 * in both halves of the guided batch.
 */
export function negativePromptFor(template: string, prompt: string | PromptFields): string {
  if (!template.includes(PATIENT_PLACEHOLDER)) return template;
  let fields: Omit<PromptFields, "findings">;
  if (typeof prompt === "string") {
    const parsed = parsePrompt(prompt);
    if (parsed === null) {
      throw new PromptError(
        `negative prompt "${template}": ${PATIENT_PLACEHOLDER} needs a prompt that starts "{age} year old [RACE] {sex}.", got "${prompt}"`,
      );
    }
    fields = parsed;
  } else {
    fields = prompt;
  }
  return template.split(PATIENT_PLACEHOLDER).join(patientSentence(fields)).trim();
}

/**
 * One negative prompt per prompt entry: a single text repeated, or a list as long as the entries;
 * null when the list's length or any element's type is wrong (the caller names the problem).
 */
export function negativePromptsPerEntry(
  negative: string | readonly string[],
  entries: number,
): string[] | null {
  if (typeof negative === "string") return new Array<string>(entries).fill(negative);
  if (negative.length !== entries || negative.some((text) => typeof text !== "string")) return null;
  return [...negative];
}

export interface PromptFromRecordOptions {
  /** Include the race (default true); RoentGen-v2 prompts may omit it. */
  race?: boolean;
  /**
   * "auto" (default): the impression of the record's own prompt when it has one that follows the
   * template, else one written from the labels. "labels": always from the labels.
   */
  impression?: "auto" | "labels";
  /** Uncertain (-1) labels: "possible <finding>" (default, as the phantom hedges) or left out. */
  uncertain?: "possible" | "omit";
  /**
   * With impression "labels": a lateralised finding (`LATERAL_FINDINGS`) that the record's own report
   * impression gives a side for is phrased with it ("left pleural effusion", "bilateral pleural
   * effusion"); default false. Records without a report impression, or whose report names no side,
   * keep the plain phrase.
   */
  sides?: boolean;
}

export type Side = "left" | "right" | "bilateral";

/** Findings a report gives a side for, and the words that name each in an impression. */
export const LATERAL_FINDINGS: Readonly<Partial<Record<ChexpertLabel, RegExp>>> = {
  "Pleural Effusion": /\beffusions?\b/,
  Pneumothorax: /\bpneumothora(?:x|ces)\b/,
  Atelectasis: /\batelectas[ie]s\b/,
  Consolidation: /\bconsolidations?\b/,
};

/**
 * The side a report impression gives a finding: each clause (split at sentence and list
 * punctuation, "with" and "and") that names the finding contributes its side words; "bilateral",
 * or both left and right, is bilateral. Null when the impression never names the finding with a side
 * (or the label is not lateralised).
 */
export function reportedSide(impression: string, label: ChexpertLabel): Side | null {
  const words = LATERAL_FINDINGS[label];
  if (!words) return null;
  let left = false;
  let right = false;
  for (const clause of impression.toLowerCase().split(/[.;,:]|\bwith\b|\band\b/)) {
    if (!words.test(clause)) continue;
    if (/\bbilateral(?:ly)?\b|\bboth\b/.test(clause)) return "bilateral";
    if (/\bleft\b/.test(clause)) left = true;
    if (/\bright\b/.test(clause)) right = true;
  }
  if (left && right) return "bilateral";
  return left ? "left" : right ? "right" : null;
}

/**
 * Positive findings of a record as phrases, in CheXpert column order; with `sidesFrom` (a report
 * impression) each lateralised finding carries the side that impression gives it.
 */
export function recordFindings(
  record: CxrRecord,
  uncertain: "possible" | "omit" = "possible",
  sidesFrom: string | null = null,
): string[] {
  const findings: string[] = [];
  for (const label of CHEXPERT_LABELS) {
    if (label === "No Finding") continue;
    const value = record.labels[label];
    const side = sidesFrom === null ? null : reportedSide(sidesFrom, label);
    const phrase = side === null ? FINDING_PHRASES[label] : `${side} ${FINDING_PHRASES[label]}`;
    if (value === 1) findings.push(phrase);
    else if (value === -1 && uncertain === "possible") findings.push(`possible ${phrase}`);
  }
  return findings;
}

/** The RoentGen-v2 prompt of a record. Needs its sex and age; throws a PromptError naming the record. */
export function promptFromRecord(record: CxrRecord, options: PromptFromRecordOptions = {}): string {
  const where = `record ${record.source.file}${record.source.row === null ? "" : ` row ${record.source.row}`} (study ${record.studyId})`;
  checkDemographics(record.sex, record.age, where);
  const parsed = record.prompt ? parsePrompt(record.prompt) : null;
  const own = options.impression !== "labels" ? parsed : null;
  const report = options.sides ? parsed?.impression || null : null;
  const impression =
    own?.impression || impressionFromFindings(recordFindings(record, options.uncertain, report));
  return formatPrompt({
    age: Math.round(record.age as number),
    race: options.race === false ? null : record.race,
    sex: record.sex as Sex,
    impression,
  });
}
