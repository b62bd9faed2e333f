/**
 * The Markdown report: the evaluation document rendered for people. Every number comes from the
 * document, so the report and the JSON can never disagree.
 */
import type { Difference, Estimate, EvaluationDocument, GapResult } from "./report-schema.ts";

/** Dimensions whose pairwise differences the summary prints; report.md prints every dimension. */
const SUMMARY_PAIR_DIMENSIONS = new Set(["sex", "age", "race", "institution"]);

/**
 * "0.8123 (0.8011 to 0.8240)", "0.8123 (interval undefined: only 150 of 200 rounds ...)" or
 * "undefined: <short reason>" - never a made-up number.
 */
export function formatEstimate(estimate: Estimate, digits = 4): string {
  if (estimate.value === null) return `undefined: ${shortReason(estimate.undefinedReason)}`;
  const value = estimate.value.toFixed(digits);
  if (estimate.intervalUndefinedReason !== null)
    return `${value} (interval undefined: ${shortReason(estimate.intervalUndefinedReason)})`;
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
  if (estimate.intervalUndefinedReason !== null)
    return `${percent(estimate.value)} (interval undefined: ${shortReason(estimate.intervalUndefinedReason)})`;
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
      ? `Intervals: ${Math.round(config.confidenceLevel * 100)}% from ${config.bootstrapRounds} bootstrap rounds over ` +
        `patients (seed ${config.seed}): percentile intervals for rates and AUROC, symmetric intervals ` +
        "(estimate +- bootstrap quantile of the deviation) for differences between subgroups."
      : "Intervals: none (bootstrap switched off).",
    `Gaps: a subgroup takes part when the metric's own denominator reaches ${config.minimumDenominator} ` +
      "(No Finding negatives for underdiagnosis, No Finding positives for overdiagnosis, the smaller class " +
      "for AUROC). Rounds: bootstrap rounds in which the statistic was defined; below 95% of the rounds an " +
      "interval is undefined.",
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
    ...renderHeadlines(document),
    "",
    ...renderPairs(document, (dimension) => SUMMARY_PAIR_DIMENSIONS.has(dimension)),
  ];
  if (document.comparison) lines.push("", ...renderComparison(document));
  if (document.notes.length > 0) lines.push("", "## Notes", "", ...document.notes.map((note) => `- ${note}`));
  return `${lines.join("\n")}\n`;
}

function rounds(estimate: Estimate, requested: number): string {
  return requested === 0 || estimate.value === null ? "" : `${estimate.roundsUsed}/${requested}`;
}

function headlinePair(gap: GapResult): string {
  return gap.headline.worst === null ? "" : `${gap.headline.worst} - ${gap.headline.best}`;
}

function renderHeadlines(document: EvaluationDocument): string[] {
  const requested = document.config.bootstrapRounds;
  return [
    "## Headline gaps (worst-off minus best-off subgroup)",
    "",
    "The worst-off and best-off subgroups are chosen on the validation split and the gap is measured here, " +
      "so choosing them does not inflate it; positive means worse for the worst-off (higher error rate, " +
      "lower AUROC). A negative value means the validation ranking did not hold.",
    "",
    table(
      ["Dimension", "Metric", "Gap", "Rounds", "Worst-off - best-off", "Subgroups in gaps", "Left out"],
      document.gaps
        .filter((gap) => gap.label === null)
        .map((gap) => [
          gap.dimension,
          gapTitle(gap),
          formatEstimate(gap.headline.gap),
          rounds(gap.headline.gap, requested),
          headlinePair(gap),
          String(gap.subgroups.length),
          String(gap.excluded.length),
        ]),
    ),
  ];
}

function renderPairs(document: EvaluationDocument, include: (dimension: string) => boolean): string[] {
  const requested = document.config.bootstrapRounds;
  const level = `${Math.round(document.config.confidenceLevel * 100)}%`;
  const rows: string[][] = [];
  for (const gap of document.gaps) {
    if (!include(gap.dimension) || gap.pairs.length === 0) continue;
    for (const pair of gap.pairs) {
      const band =
        pair.simultaneousLower === null || pair.simultaneousUpper === null
          ? gap.simultaneous?.undefinedReason
            ? `undefined: ${shortReason(gap.simultaneous.undefinedReason)}`
            : ""
          : `${pair.simultaneousLower.toFixed(4)} to ${pair.simultaneousUpper.toFixed(4)}`;
      rows.push([
        gap.dimension,
        gapTitle(gap),
        `${pair.first} - ${pair.second}`,
        formatEstimate(pair.difference),
        band,
        rounds(pair.difference, requested),
      ]);
    }
  }
  return [
    "## Pairwise differences",
    "",
    `Every pair of subgroups that take part, first minus second; the interval is the pair's own ${level} ` +
      `interval, the band a ${level} simultaneous band over all pairs of the dimension (sup-t).`,
    "",
    rows.length === 0
      ? "No dimension has two subgroups that reach the minimum denominator."
      : table(["Dimension", "Metric", "Pair", "Difference", `Simultaneous ${level}`, "Rounds"], rows),
  ];
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
    "The same fixed pair of subgroups for both models: every pair, and the candidate's headline pair. " +
      "Relative change = (candidate gap - baseline gap) / baseline gap, given only where the baseline gap's " +
      "interval excludes 0.",
    "",
    table(
      ["Dimension", "Metric", "Gap", "Candidate gap", "Baseline gap", "Difference", "Relative change"],
      comparison.gaps
        .filter((gap) => gap.kind === "headline" || SUMMARY_PAIR_DIMENSIONS.has(gap.dimension))
        .map((gap) => [
          gap.dimension,
          METRIC_TITLES[gap.metric],
          `${gap.kind === "headline" ? "headline " : ""}${gap.first} - ${gap.second}`,
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
    lines.push(`## ${METRIC_TITLES[metric]} headline gaps by label`, "");
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
            return gap ? formatEstimate(gap.headline.gap) : "";
          }),
        ]),
      ),
      "",
    );
  }
  lines.push(
    ...renderPairs(document, (dimension) => !SUMMARY_PAIR_DIMENSIONS.has(dimension)).map((line) =>
      line === "## Pairwise differences" ? "## Pairwise differences (intersections)" : line,
    ),
    "",
  );
  lines.push("## Subgroups", "");
  for (const dimension of dimensions) {
    lines.push(`### ${dimension}`, "");
    lines.push(
      table(
        [
          "Subgroup",
          "Images",
          "Patients",
          "No Finding negatives",
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
              noFinding ? String(noFinding.negatives) : "no column",
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
