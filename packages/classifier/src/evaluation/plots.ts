/**
 * Plots of an evaluation document, drawn as SVG (plain text, easy to test and diff) and rendered to
 * PNG with sharp: one ROC curve per label and, per subgroup dimension, the underdiagnosis rates with
 * their intervals.
 */
import sharp from "sharp";
import type { Estimate, EvaluationDocument, LabelResult, SubgroupResult } from "./report-schema.ts";

export interface Plot {
  /** File name, e.g. "roc-no-finding.png". */
  readonly name: string;
  readonly svg: string;
}

const FONT = `font-family="DejaVu Sans, Arial, sans-serif"`;

function escapeXml(text: string): string {
  return text
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}

export function slug(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "");
}

function formatValue(estimate: Estimate): string {
  if (estimate.value === null) return "undefined";
  const interval =
    estimate.lower === null || estimate.upper === null
      ? ""
      : ` (${estimate.lower.toFixed(3)} to ${estimate.upper.toFixed(3)})`;
  return `${estimate.value.toFixed(3)}${interval}`;
}

/** ROC curve of one label with the operating point at its threshold. */
export function rocCurveSvg(label: LabelResult): string | null {
  if (label.roc === null) return null;
  const plot = 400;
  const margin = { left: 60, right: 20, top: 50, bottom: 55 };
  const width = margin.left + plot + margin.right;
  const height = margin.top + plot + margin.bottom;
  const x = (fpr: number) => margin.left + fpr * plot;
  const y = (tpr: number) => margin.top + (1 - tpr) * plot;
  const points = label.roc.falsePositiveRate
    .map((fpr, index) => `${x(fpr).toFixed(2)},${y(label.roc!.truePositiveRate[index]).toFixed(2)}`)
    .join(" ");
  const ticks = [0, 0.2, 0.4, 0.6, 0.8, 1];
  const operatingPoint =
    label.truePositiveRate.value !== null && label.falsePositiveRate.value !== null
      ? `<circle cx="${x(label.falsePositiveRate.value).toFixed(2)}" cy="${y(label.truePositiveRate.value).toFixed(2)}" r="5" fill="#d62728"/>` +
        `<text x="${x(label.falsePositiveRate.value) + 8}" y="${y(label.truePositiveRate.value) + 16}" font-size="11" ${FONT} fill="#d62728">threshold ${label.threshold?.toFixed(3)}</text>`
      : "";
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" ${FONT}>${escapeXml(label.label)}</text>`,
    `<text x="${width / 2}" y="40" text-anchor="middle" font-size="12" ${FONT}>AUROC ${escapeXml(formatValue(label.auroc))}</text>`,
    ...ticks.map(
      (tick) =>
        `<line x1="${x(tick)}" y1="${margin.top}" x2="${x(tick)}" y2="${margin.top + plot}" stroke="#eee"/>` +
        `<line x1="${margin.left}" y1="${y(tick)}" x2="${margin.left + plot}" y2="${y(tick)}" stroke="#eee"/>` +
        `<text x="${x(tick)}" y="${margin.top + plot + 16}" text-anchor="middle" font-size="11" ${FONT}>${tick}</text>` +
        `<text x="${margin.left - 6}" y="${y(tick) + 4}" text-anchor="end" font-size="11" ${FONT}>${tick}</text>`,
    ),
    `<rect x="${margin.left}" y="${margin.top}" width="${plot}" height="${plot}" fill="none" stroke="#333"/>`,
    `<line x1="${x(0)}" y1="${y(0)}" x2="${x(1)}" y2="${y(1)}" stroke="#999" stroke-dasharray="4 4"/>`,
    `<polyline points="${points}" fill="none" stroke="#1f77b4" stroke-width="2"/>`,
    operatingPoint,
    `<text x="${margin.left + plot / 2}" y="${height - 14}" text-anchor="middle" font-size="12" ${FONT}>False positive rate</text>`,
    `<text x="16" y="${margin.top + plot / 2}" text-anchor="middle" font-size="12" ${FONT} transform="rotate(-90 16 ${margin.top + plot / 2})">True positive rate</text>`,
    "</svg>",
  ].join("\n");
}

/** Underdiagnosis rate of each subgroup of one dimension, with intervals; small subgroups in grey. */
export function underdiagnosisSvg(
  dimension: string,
  subgroups: readonly SubgroupResult[],
  gapText: string,
  inGap: (subgroup: SubgroupResult) => boolean = () => true,
): string {
  const rowHeight = 26;
  const width = 720;
  const margin = { left: 200, right: 40, top: 58, bottom: 50 };
  const height = margin.top + margin.bottom + rowHeight * subgroups.length;
  const plotWidth = width - margin.left - margin.right;
  const highest = Math.max(
    0.05,
    ...subgroups.flatMap((subgroup) => [
      subgroup.underdiagnosisRate.upper ?? 0,
      subgroup.underdiagnosisRate.value ?? 0,
    ]),
  );
  const axisMax = Math.min(1, Math.ceil(highest * 10 + 0.5) / 10);
  const x = (rate: number) => margin.left + (rate / axisMax) * plotWidth;
  const ticks = Array.from({ length: 6 }, (_, index) => (axisMax * index) / 5);
  const rows = subgroups.map((subgroup, index) => {
    const rowY = margin.top + rowHeight * (index + 0.5);
    const taking = inGap(subgroup);
    const colour = taking ? "#1f77b4" : "#aaaaaa";
    const rate = subgroup.underdiagnosisRate;
    const label = `<text x="${margin.left - 8}" y="${rowY + 4}" text-anchor="end" font-size="12" ${FONT} fill="${taking ? "#000" : "#888"}">${escapeXml(subgroup.name)} (n=${subgroup.images})</text>`;
    if (rate.value === null) {
      return `${label}<text x="${margin.left + 6}" y="${rowY + 4}" font-size="11" ${FONT} fill="#888">undefined</text>`;
    }
    const whisker =
      rate.lower === null || rate.upper === null
        ? ""
        : `<line x1="${x(rate.lower).toFixed(2)}" y1="${rowY}" x2="${x(rate.upper).toFixed(2)}" y2="${rowY}" stroke="${colour}" stroke-width="2"/>` +
          `<line x1="${x(rate.lower).toFixed(2)}" y1="${rowY - 5}" x2="${x(rate.lower).toFixed(2)}" y2="${rowY + 5}" stroke="${colour}" stroke-width="2"/>` +
          `<line x1="${x(rate.upper).toFixed(2)}" y1="${rowY - 5}" x2="${x(rate.upper).toFixed(2)}" y2="${rowY + 5}" stroke="${colour}" stroke-width="2"/>`;
    return `${label}${whisker}<circle cx="${x(rate.value).toFixed(2)}" cy="${rowY}" r="5" fill="${colour}"/>`;
  });
  const plotBottom = height - margin.bottom;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" ${FONT}>Underdiagnosis rate by ${escapeXml(dimension)}</text>`,
    `<text x="${width / 2}" y="40" text-anchor="middle" font-size="12" ${FONT}>${escapeXml(gapText)}</text>`,
    ...ticks.map(
      (tick) =>
        `<line x1="${x(tick)}" y1="${margin.top}" x2="${x(tick)}" y2="${plotBottom}" stroke="#eee"/>` +
        `<text x="${x(tick)}" y="${plotBottom + 16}" text-anchor="middle" font-size="11" ${FONT}>${tick.toFixed(2)}</text>`,
    ),
    `<line x1="${margin.left}" y1="${plotBottom}" x2="${width - margin.right}" y2="${plotBottom}" stroke="#333"/>`,
    ...rows,
    `<text x="${margin.left + plotWidth / 2}" y="${height - 12}" text-anchor="middle" font-size="12" ${FONT}>No Finding false-positive rate (grey: too few No Finding negatives, kept out of gaps)</text>`,
    "</svg>",
  ].join("\n");
}

/** Every plot of a document, as SVG. */
export function evaluationPlots(document: EvaluationDocument): Plot[] {
  const plots: Plot[] = [];
  for (const label of document.overall.labels) {
    const svg = rocCurveSvg(label);
    if (svg !== null) plots.push({ name: `roc-${slug(label.label)}.png`, svg });
  }
  if (document.inputs.labels.includes("No Finding")) {
    const dimensions = [...new Set(document.subgroups.map((subgroup) => subgroup.dimension))].filter(
      (dimension) => dimension !== "overall",
    );
    for (const dimension of dimensions) {
      const gap = document.gaps.find(
        (candidate) => candidate.dimension === dimension && candidate.metric === "underdiagnosisRate",
      );
      const headline = gap?.headline;
      const gapText =
        headline && headline.gap.value !== null
          ? `headline gap ${formatValue(headline.gap)}: ${headline.worst} minus ${headline.best} (chosen on validation)`
          : "headline gap undefined (see the report)";
      const members = new Set(gap?.subgroups.map((member) => member.subgroup) ?? []);
      const subgroups = document.subgroups.filter((subgroup) => subgroup.dimension === dimension);
      plots.push({
        name: `underdiagnosis-${slug(dimension)}.png`,
        svg: underdiagnosisSvg(dimension, subgroups, gapText, (subgroup) => members.has(subgroup.name)),
      });
    }
  }
  return plots;
}

export async function renderPng(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg)).png().toBuffer();
}
