import { formatIssue } from "../errors.ts";
import { CHEXPERT_LABELS } from "../records.ts";
import type { Counts, DatasetSummary } from "./summary.ts";

/** The human-readable report of `cxr data inspect`. */
export function formatSummary(summary: DatasetSummary, heading: string): string {
  const lines: string[] = [heading, ""];
  lines.push(`images ${summary.images}, patients ${summary.patients}, studies ${summary.studies}`);
  if (summary.patientsInSeveralSplits > 0) {
    lines.push(`warning: ${summary.patientsInSeveralSplits} patients have images in more than one split`);
  }
  lines.push("");
  const attributes: [string, Counts][] = [
    ["split", summary.split],
    ["view", summary.view],
    ["sex", summary.sex],
    ["age", summary.ageBin],
    ["race", summary.race],
    ["institution", summary.institution],
  ];
  for (const [name, counts] of attributes) {
    const entries = Object.entries(counts).map(([value, count]) => `${value} ${count}`);
    lines.push(`${name.padEnd(12)}${entries.length === 0 ? "-" : entries.join("  ")}`);
  }

  lines.push("");
  const labelWidth = Math.max(...CHEXPERT_LABELS.map((label) => label.length)) + 2;
  const columns = ["positive", "negative", "uncertain", "blank"] as const;
  lines.push("label".padEnd(labelWidth) + columns.map((column) => column.padStart(10)).join(""));
  for (const label of CHEXPERT_LABELS) {
    const counts = summary.labels[label];
    lines.push(
      label.padEnd(labelWidth) + columns.map((column) => String(counts[column]).padStart(10)).join(""),
    );
  }

  lines.push("");
  const { problems } = summary;
  if (problems.total === 0) {
    lines.push("problems: none");
  } else {
    const kinds = Object.entries(problems.byKind).map(([kind, count]) => `${kind} ${count}`);
    lines.push(
      `problems: ${problems.total} (${kinds.join(", ")}); ${problems.skipped} rows or images skipped`,
    );
    for (const issue of problems.first) lines.push(`  ${formatIssue(issue)}`);
    if (problems.first.length < problems.total) {
      lines.push(`  ... ${problems.total - problems.first.length} more (raise --max-problems to see them)`);
    }
  }
  return `${lines.join("\n")}\n`;
}
