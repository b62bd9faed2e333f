/**
 * CheXpert labels from drawn findings, coded as CheXpert codes them: 1 positive, -1 uncertain (the
 * report hedges), 0 negative. Every one of the 14 observations is drawn by the phantom, so no column
 * is ever blank ("not mentioned").
 *
 * Conventions (documented in the README):
 * - Lung Opacity is the parent of consolidation, ill-defined opacity, edema and lobar collapse;
 * - Enlarged Cardiomediastinum is mediastinal widening (cardiomegaly alone does not set it);
 * - Pneumonia is a clinical call on top of a drawn consolidation/opacity, so it can be uncertain;
 * - No Finding is 1 exactly when no pathology (the 12 labels other than No Finding and Support
 *   Devices) is positive or uncertain; as in the CheXpert labeller, support devices do not count.
 */
import { CHEXPERT_LABELS, type ChexpertLabel, type LabelSet, type LabelValue } from "../records.ts";
import type { Device, Finding, FindingKind, Reported } from "./types.ts";

const LABEL_OF_FINDING: Readonly<Record<FindingKind, readonly ChexpertLabel[]>> = {
  cardiomegaly: ["Cardiomegaly"],
  mediastinalWidening: ["Enlarged Cardiomediastinum"],
  pleuralEffusion: ["Pleural Effusion"],
  pneumothorax: ["Pneumothorax"],
  consolidation: ["Consolidation", "Lung Opacity"],
  opacity: ["Lung Opacity"],
  edema: ["Edema", "Lung Opacity"],
  lesion: ["Lung Lesion"],
  atelectasis: ["Atelectasis"],
  fracture: ["Fracture"],
  pleuralThickening: ["Pleural Other"],
};

/** Labels that are not pathologies: they never make No Finding 0. */
const NOT_PATHOLOGY: ReadonlySet<ChexpertLabel> = new Set<ChexpertLabel>(["No Finding", "Support Devices"]);

function code(reported: Reported): LabelValue {
  return reported === "positive" ? 1 : -1;
}

/** Positive beats uncertain beats negative. */
function stronger(current: LabelValue, next: LabelValue): LabelValue {
  if (current === 1 || next === 1) return 1;
  if (current === -1 || next === -1) return -1;
  return 0;
}

export function labelsFromFindings(
  findings: readonly Finding[],
  devices: readonly Device[],
  pneumonia: Reported | null,
): LabelSet {
  const labels = {} as LabelSet;
  for (const label of CHEXPERT_LABELS) labels[label] = 0;
  for (const finding of findings) {
    const targets = [...LABEL_OF_FINDING[finding.kind]];
    if (finding.kind === "atelectasis" && finding.pattern === "lobar") targets.push("Lung Opacity");
    for (const label of targets) labels[label] = stronger(labels[label], code(finding.reported));
  }
  if (pneumonia !== null) labels.Pneumonia = code(pneumonia);
  labels["Support Devices"] = devices.length > 0 ? 1 : 0;
  let pathology = false;
  for (const label of CHEXPERT_LABELS) {
    if (!NOT_PATHOLOGY.has(label) && labels[label] !== 0) pathology = true;
  }
  labels["No Finding"] = pathology ? 0 : 1;
  return labels;
}
