/**
 * The Markdown report: the evaluation document rendered for people. Every number comes from the
 * document, so the report and the JSON can never disagree.
 */
import type { Difference, Estimate, EvaluationDocument, GapResult } from "./report-schema.ts";

/** "0.8123 (0.8011-0.8240)", or "undefined: <short reason>" - never a made-up number. */
export function formatEstimate(estimate: Estimate, digits = 4): string {
  if (estimate.value === null) return `undefined: ${shortReason(estimate.undefinedReason)}`;
  const value = estimate.value.toFixed(digits);
  if (estimate.lower === null || estimate.upper === null) return value;
  return `${value} (${estimate.lower.toFixed(digits)} to ${estimate.upper.toFixed(digits)})`;
}

function shortReason(reason: string | null): string {
  if (reason === null) return "unknown reason";
  const cut = reason.indexOf(" (");
  return cut < 0 ? reason : reason.slice(0, cut);
}

function formatNumber(value: number | null, digits = 4): string {
  return value === null ? "undefined" : value.toFixed(digits);
}

function formatPercent(estimate: Estimate): string {
  if (estimate.value === null) return `undefined: ${shortReason(estimate.undefinedReason)}`;
  const percent = (value: number) => `${(100 * value).toFixed(1)}%`;
  if (estimate.lower === null || estimate.upper === null) return percent(estimate.value);
  return `${percent(estimate.value)} (${percent(estimate.lower)} to ${percent(estimate.upper)})`;
}

function table(header: string[], rows: string[][]): string {
  const escapeCell = (cell: string) => cell.replaceAll("|", "\\|");
  return [
    `| ${header.map(escapeCell).join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
    ...rows.map((row) => `| ${row.map(escapeCell).join(" | ")} |`),
  ].join("\n");
}

const METRIC_TITLES: Record<string, string> = {
  underdiagnosisRate: "Underdiagnosis rate",
  overdiagnosisRate: "Overdiagnosis rate",
  macroAuroc: "Macro AUROC",
  auroc: "AUROC",
  truePositiveRate: "TPR",
  falsePositiveRate: "FPR",
};

function gapTitle(gap: { metric: string; label: string | null }): string {
  return gap.label === null ? METRIC_TITLES[gap.metric] : `${gap.label} ${METRIC_TITLES[gap.metric]}`;
}

function describeThresholds(document: EvaluationDocument): string {
  const sources = new Set(document.thresholdDetails.map((detail) => detail.source));
  if (sources.has("user")) return `given in ${document.inputs.thresholdsFile}`;
  if (sources.has("validation")) return `F1-optimal on ${document.inputs.validation}`;
  return "F1-optimal on the evaluated predictions themselves (optimistic; no validation file given)";
}

/** The headline part: what the CLI prints when it is not asked for JSON. */
export function renderSummary(document: EvaluationDocument): string {
  const { inputs, config, overall } = document;
  const lines = [
    `# Evaluation of ${inputs.predictions}`,
    "",
    `${inputs.images} images of ${inputs.patients} patients; ${inputs.labels.length} labels` +
      (inputs.missingLabels.length > 0 ? ` (missing: ${inputs.missingLabels.join(", ")})` : "") +
      ".",
    `Thresholds: ${describeThresholds(document)}.`,
    config.bootstrapRounds > 0
      ? `Intervals: ${Math.round(config.confidenceLevel * 100)}% percentile intervals from ${config.bootstrapRounds} ` +
        `bootstrap rounds over patients (seed ${config.seed}).`
      : "Intervals: none (bootstrap switched off).",
    `Gaps use subgroups with at least ${config.minimumSubgroupSize} images.`,
    "",
    `- Macro AUROC: ${formatEstimate(overall.macroAuroc)} over ${overall.macroLabels.length} labels`,
    `- Underdiagnosis rate (No Finding FPR): ${formatPercent(overall.underdiagnosisRate)}`,
    `- Overdiagnosis rate (No Finding FNR): ${formatPercent(overall.overdiagnosisRate)}`,
    "",
    "## Labels",
    "",
    table(
      ["Label", "Positives", "Negatives", "AUROC", "Threshold", "Accuracy", "TPR", "FPR", "Precision"],
      overall.labels.map((label) => [
        label.label,
        String(label.positives),
        String(label.negatives),
        formatEstimate(label.auroc),
        formatNumber(label.threshold),
        formatEstimate(label.accuracy),
        formatEstimate(label.truePositiveRate),
        formatEstimate(label.falsePositiveRate),
        formatEstimate(label.precision),
      ]),
    ),
    "",
    "## Fairness gaps (largest minus smallest subgroup value)",
    "",
    table(
      ["Dimension", "Metric", "Gap", "Highest", "Lowest"],
      document.gaps
        .filter((gap) => gap.label === null)
        .map((gap) => [
          gap.dimension,
          gapTitle(gap),
          formatEstimate(gap.gap),
          gapEnd(gap, "highest"),
          gapEnd(gap, "lowest"),
        ]),
    ),
  ];
  if (document.comparison) lines.push("", ...renderComparison(document));
  if (document.notes.length > 0) lines.push("", "## Notes", "", ...document.notes.map((note) => `- ${note}`));
  return `${lines.join("\n")}\n`;
}

function gapEnd(gap: GapResult, end: "highest" | "lowest"): string {
  const value = gap[end];
  return value === null ? "" : `${value.subgroup} (${value.value.toFixed(4)})`;
}

function formatDifference(difference: Difference): string {
  return formatEstimate(difference.difference);
}

function renderComparison(document: EvaluationDocument): string[] {
  const comparison = document.comparison!;
  return [
    `## Comparison with baseline ${comparison.baseline}`,
    "",
    "Differences are candidate minus baseline, with paired-bootstrap intervals (the same patients resampled for both).",
    "",
    table(
      ["Statistic", "Candidate", "Baseline", "Difference"],
      [
        [
          "Macro AUROC",
          formatNumber(comparison.macroAuroc.candidate),
          formatNumber(comparison.macroAuroc.baseline),
          formatDifference(comparison.macroAuroc),
        ],
        ...comparison.labels.flatMap((label) => [
          [`${label.label} AUROC`, ...differenceCells(label.auroc)],
          [`${label.label} accuracy`, ...differenceCells(label.accuracy)],
        ]),
      ],
    ),
    "",
    "### Gap changes",
    "",
    table(
      ["Dimension", "Metric", "Candidate gap", "Baseline gap", "Difference", "Relative change"],
      comparison.gaps
        .filter((gap) => gap.label === null)
        .map((gap) => [
          gap.dimension,
          gapTitle(gap),
          formatNumber(gap.gap.candidate),
          formatNumber(gap.gap.baseline),
          formatDifference(gap.gap),
          formatPercent(gap.relativeChange),
        ]),
    ),
  ];
}

function differenceCells(difference: Difference): string[] {
  return [
    formatNumber(difference.candidate),
    formatNumber(difference.baseline),
    formatDifference(difference),
  ];
}

/** The full report: the summary, then per-label gaps and every subgroup. */
export function renderMarkdownReport(document: EvaluationDocument): string {
  const dimensions = [...new Set(document.subgroups.map((subgroup) => subgroup.dimension))].filter(
    (dimension) => dimension !== "overall",
  );
  const lines = [renderSummary(document).trimEnd(), ""];
  for (const metric of ["auroc", "truePositiveRate", "falsePositiveRate"]) {
    lines.push(`## ${METRIC_TITLES[metric]} gaps by label`, "");
    const gaps = document.gaps.filter((gap) => gap.metric === metric);
    lines.push(
      table(
        ["Label", ...dimensions],
        document.inputs.labels.map((label) => [
          label,
          ...dimensions.map((dimension) => {
            const gap = gaps.find(
              (candidate) => candidate.label === label && candidate.dimension === dimension,
            );
            return gap ? formatEstimate(gap.gap) : "";
          }),
        ]),
      ),
      "",
    );
  }
  lines.push("## Subgroups", "");
  for (const dimension of dimensions) {
    lines.push(`### ${dimension}`, "");
    lines.push(
      table(
        [
          "Subgroup",
          "Images",
          "Patients",
          "In gaps",
          "Underdiagnosis",
          "Overdiagnosis",
          "Macro AUROC",
          "No Finding AUROC",
        ],
        document.subgroups
          .filter((subgroup) => subgroup.dimension === dimension)
          .map((subgroup) => {
            const noFinding = subgroup.labels.find((label) => label.label === "No Finding");
            return [
              subgroup.name,
              String(subgroup.images),
              String(subgroup.patients),
              subgroup.inGaps ? "yes" : "no (too small)",
              formatPercent(subgroup.underdiagnosisRate),
              formatPercent(subgroup.overdiagnosisRate),
              formatEstimate(subgroup.macroAuroc),
              noFinding ? formatEstimate(noFinding.auroc) : "no column",
            ];
          }),
      ),
      "",
    );
  }
  return `${lines.join("\n").trimEnd()}\n`;
}
