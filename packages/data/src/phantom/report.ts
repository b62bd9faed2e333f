/**
 * The impression sentence a radiologist would write for the drawn findings, and the RoentGen-v2 prompt
 * `"{age} year old {RACE} {sex}. {impression}"` (DOMAIN.md §1). Uncertain findings are hedged
 * ("possible ..."), matching their -1 labels.
 */
import type { Demographics, Device, Finding, PhantomParameters, Reported, Severity, Side } from "./types.ts";

/** Half the inner thoracic width of an average adult, for stating lesion sizes in millimetres. */
const ADULT_BODY_UNIT_MM = 140;

const NORMAL_IMPRESSIONS = [
  "No acute cardiopulmonary abnormality.",
  "No acute intrathoracic abnormalities identified.",
  "Clear lungs. Normal heart size.",
] as const;

const SIZE_WORD: Readonly<Record<Severity, string>> = {
  mild: "small",
  moderate: "moderate",
  severe: "large",
};
const DEGREE_WORD: Readonly<Record<Severity, string>> = {
  mild: "mild",
  moderate: "moderate",
  severe: "severe",
};

const LOBE_NAME = {
  RUL: "right upper lobe",
  RML: "right middle lobe",
  RLL: "right lower lobe",
  LUL: "left upper lobe",
  lingula: "lingular",
  LLL: "left lower lobe",
} as const;

/** Order in which a radiologist leads: the most urgent first. */
const PRIORITY: readonly Finding["kind"][] = [
  "pneumothorax",
  "consolidation",
  "edema",
  "cardiomegaly",
  "pleuralEffusion",
  "opacity",
  "lesion",
  "atelectasis",
  "mediastinalWidening",
  "fracture",
  "pleuralThickening",
];

function hedge(reported: Reported, phrase: string): string {
  return reported === "uncertain" ? `possible ${phrase}` : phrase;
}

function ordinal(n: number): string {
  const suffix =
    n % 10 === 1 && n !== 11
      ? "st"
      : n % 10 === 2 && n !== 12
        ? "nd"
        : n % 10 === 3 && n !== 13
          ? "rd"
          : "th";
  return `${n}${suffix}`;
}

function zone(y: number, height: number): string {
  const depth = y / height;
  return depth < 0.4 ? "upper" : depth < 0.7 ? "mid" : "basilar";
}

function joinList(items: readonly string[]): string {
  if (items.length <= 1) return items.join("");
  return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Findings of one kind on both sides become one bilateral phrase. */
function pairedPhrase(
  findings: readonly Extract<Finding, { side: Side }>[],
  single: (finding: Extract<Finding, { side: Side }>) => string,
  bilateral: (severity: Severity) => string,
): string {
  if (findings.length === 2 && findings[0].severity === findings[1].severity) {
    const reported = findings.some((finding) => finding.reported === "positive") ? "positive" : "uncertain";
    return hedge(reported, bilateral(findings[0].severity));
  }
  return joinList(findings.map(single));
}

function findingPhrases(
  findings: readonly Finding[],
  pneumonia: Reported | null,
  thoraxScale: number,
  lungHeight: number,
): string[] {
  const phrases: string[] = [];
  // The pneumonia call attaches to the first consolidation, or failing that to the first opacity.
  let pneumoniaStated = pneumonia === null;
  const withPneumonia = (phrase: string) => {
    if (pneumoniaStated) return phrase;
    pneumoniaStated = true;
    return phrase + (pneumonia === "positive" ? ", compatible with pneumonia" : ", possibly pneumonia");
  };
  for (const kind of PRIORITY) {
    const ofKind = findings.filter((finding) => finding.kind === kind);
    if (ofKind.length === 0) continue;
    switch (kind) {
      case "pneumothorax":
        phrases.push(
          joinList(
            ofKind.map((finding) =>
              finding.kind === "pneumothorax"
                ? hedge(finding.reported, `${SIZE_WORD[finding.severity]} ${finding.side} pneumothorax`)
                : "",
            ),
          ),
        );
        break;
      case "consolidation":
        for (const finding of ofKind) {
          if (finding.kind !== "consolidation") continue;
          const density =
            finding.severity === "mild" ? "patchy " : finding.severity === "severe" ? "dense " : "";
          phrases.push(
            withPneumonia(hedge(finding.reported, `${density}${LOBE_NAME[finding.lobe]} consolidation`)),
          );
        }
        break;
      case "edema": {
        const finding = ofKind[0];
        phrases.push(hedge(finding.reported, `${DEGREE_WORD[finding.severity]} pulmonary edema`));
        break;
      }
      case "cardiomegaly": {
        const finding = ofKind[0];
        phrases.push(hedge(finding.reported, `${DEGREE_WORD[finding.severity]} cardiomegaly`));
        break;
      }
      case "pleuralEffusion": {
        const sided = ofKind.filter((finding) => finding.kind === "pleuralEffusion");
        phrases.push(
          pairedPhrase(
            sided,
            (finding) =>
              hedge(finding.reported, `${SIZE_WORD[finding.severity]} ${finding.side} pleural effusion`),
            (severity) => `${SIZE_WORD[severity]} bilateral pleural effusions`,
          ),
        );
        break;
      }
      case "opacity": {
        const sided = ofKind.filter((finding) => finding.kind === "opacity");
        const wording = (severity: Severity) => (severity === "mild" ? "hazy" : "patchy");
        phrases.push(
          withPneumonia(
            pairedPhrase(
              sided,
              (finding) =>
                hedge(
                  finding.reported,
                  `${wording(finding.severity)} ${finding.side} ${finding.kind === "opacity" ? zone(finding.blobs[0].y, lungHeight) : ""} opacity`,
                ),
              (severity) => `${wording(severity)} bilateral opacities`,
            ),
          ),
        );
        break;
      }
      case "lesion":
        for (const finding of ofKind) {
          if (finding.kind !== "lesion") continue;
          const diameterMm = 2 * finding.radius * ADULT_BODY_UNIT_MM * thoraxScale;
          const where = `${finding.side} ${zone(finding.y, lungHeight)} lung`;
          phrases.push(
            finding.severity === "severe"
              ? hedge(finding.reported, `${(diameterMm / 10).toFixed(1)} cm ${where} mass`)
              : hedge(finding.reported, `${Math.round(diameterMm)} mm ${where} nodule`),
          );
        }
        break;
      case "atelectasis": {
        const sided = ofKind.filter((finding) => finding.kind === "atelectasis");
        const lobar = sided.filter((finding) => finding.pattern === "lobar");
        const plate = sided.filter((finding) => finding.pattern === "plate");
        for (const finding of lobar)
          phrases.push(hedge(finding.reported, `${finding.side} lower lobe collapse`));
        if (plate.length > 0) {
          phrases.push(
            pairedPhrase(
              plate,
              (finding) => hedge(finding.reported, `${finding.side} basilar atelectasis`),
              () => "bibasilar atelectasis",
            ),
          );
        }
        break;
      }
      case "mediastinalWidening": {
        const finding = ofKind[0];
        const degree = finding.severity === "mild" ? "mildly " : "";
        phrases.push(hedge(finding.reported, `${degree}widened mediastinum`));
        break;
      }
      case "fracture":
        for (const finding of ofKind) {
          if (finding.kind !== "fracture") continue;
          const ribs = finding.fractures.map((fracture) => fracture.rib + 1).sort((a, b) => a - b);
          const displaced = finding.fractures.some((fracture) => fracture.displacement > 0)
            ? "displaced"
            : "nondisplaced";
          const which =
            ribs.length === 1
              ? `${displaced} fracture of the ${finding.side} ${ordinal(ribs[0])} rib`
              : `${displaced} fractures of the ${finding.side} ${ordinal(ribs[0])} to ${ordinal(ribs[ribs.length - 1])} ribs`;
          phrases.push(hedge(finding.reported, which));
        }
        break;
      case "pleuralThickening": {
        const sided = ofKind.filter((finding) => finding.kind === "pleuralThickening");
        const calcified = sided.some((finding) => finding.plaques.some((plaque) => plaque.calcified));
        const noun = calcified ? "calcified pleural plaques" : "pleural thickening";
        phrases.push(
          pairedPhrase(
            sided,
            (finding) => hedge(finding.reported, `${finding.side} ${noun}`),
            () => `bilateral ${noun}`,
          ),
        );
        break;
      }
    }
  }
  return phrases;
}

function devicePhrase(device: Device): string {
  switch (device.kind) {
    case "endotrachealTube":
      return "endotracheal tube";
    case "entericTube":
      return "enteric tube";
    case "centralLine":
      return `${device.side} ${device.entry === "jugular" ? "internal jugular" : "subclavian"} central venous catheter`;
    case "ecgLeads":
      return "cardiac monitoring leads";
    case "pacemaker":
      return `${device.side}-sided pacemaker`;
    case "sternotomyWires":
      return "median sternotomy wires";
    case "chestTube":
      return `${device.side} chest tube`;
  }
}

/**
 * The impression: findings first (the first two joined by "with"), then devices, or a normal
 * statement when no pathology is drawn. `normalVariant` picks one of the normal phrasings.
 */
export function writeImpression(
  parameters: PhantomParameters,
  pneumonia: Reported | null,
  normalVariant: number,
): string {
  const { findings, devices, habitus, anatomy } = parameters;
  const phrases = findingPhrases(findings, pneumonia, habitus.thoraxScale, anatomy.lungHeight.right);
  const sentences: string[] = [];
  if (phrases.length > 0) {
    const [first, second, ...rest] = phrases;
    sentences.push(capitalize(second === undefined ? first : `${first} with ${second}`));
    for (const phrase of rest) sentences.push(capitalize(phrase));
  }
  if (devices.length > 0) sentences.push(`${capitalize(joinList(devices.map(devicePhrase)))} in place`);
  let text = sentences.map((sentence) => `${sentence}.`).join(" ");
  if (phrases.length === 0) {
    const normal = NORMAL_IMPRESSIONS[normalVariant % NORMAL_IMPRESSIONS.length];
    text = text.length > 0 ? `${text} ${normal}` : normal;
  }
  return text;
}

/** RoentGen-v2's prompt template. */
export function writePrompt(demographics: Demographics, impression: string): string {
  return `${demographics.age} year old ${demographics.race} ${demographics.sex}. ${impression}`;
}
