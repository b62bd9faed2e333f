/**
 * Writes an evaluation to a folder: evaluation.json, report.md and plots/*.png. Everything is
 * rendered in memory first, then each file is written to a temporary name and renamed into place,
 * so a failure never leaves a half-written file behind.
 */
import { mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { evaluationPlots, renderPng } from "./plots.ts";
import { renderMarkdownReport } from "./report.ts";
import type { EvaluationDocument } from "./report-schema.ts";

export const EVALUATION_JSON = "evaluation.json";
export const EVALUATION_REPORT = "report.md";
export const PLOTS_FOLDER = "plots";
const PLOT_NAME = /^(roc|underdiagnosis)-[a-z0-9-]+\.png$/;

export function evaluationJson(document: EvaluationDocument): string {
  return `${JSON.stringify(document, null, 2)}\n`;
}

/** Writes the outputs and returns the paths written. */
export async function writeEvaluationOutputs(
  document: EvaluationDocument,
  folder: string,
): Promise<string[]> {
  const plots = evaluationPlots(document);
  const files: { path: string; content: string | Buffer }[] = [
    { path: join(folder, EVALUATION_JSON), content: evaluationJson(document) },
    { path: join(folder, EVALUATION_REPORT), content: renderMarkdownReport(document) },
  ];
  for (const plot of plots) {
    files.push({ path: join(folder, PLOTS_FOLDER, plot.name), content: await renderPng(plot.svg) });
  }

  mkdirSync(join(folder, PLOTS_FOLDER), { recursive: true });
  for (const file of files) writeFileAtomically(file.path, file.content);
  // Plots of labels or dimensions no longer present would contradict the new report.
  const current = new Set(plots.map((plot) => plot.name));
  for (const name of readdirSync(join(folder, PLOTS_FOLDER))) {
    if (PLOT_NAME.test(name) && !current.has(name)) rmSync(join(folder, PLOTS_FOLDER, name));
  }
  return files.map((file) => file.path);
}

export function writeFileAtomically(path: string, content: string | Buffer): void {
  const temporary = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(temporary, content);
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw new Error(`cannot write ${path}: ${error instanceof Error ? error.message : error}`);
  }
}
