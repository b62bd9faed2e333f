/**
 * Evaluation jobs on @cxr/classifier's evaluatePredictions: a predictions CSV (and optionally a
 * validation CSV for the F1-optimal thresholds) named under the datasets root -> AUROC, thresholds,
 * subgroup underdiagnosis and its gaps with bootstrap intervals -> evaluation.json, report.md and
 * plots under `<evaluationsRoot>/<job>`; the report is served at /v1/evaluations/{id}/report.
 */
import { join } from "node:path";
import { evaluatePredictions, readPredictionsCsv, writeEvaluationOutputs } from "@cxr/classifier";
import { resolveUnderRoot } from "./paths.ts";
import { type JobContext, JobFailure, type JobOutcome, type JobRunner } from "./queue.ts";

export interface EvaluationParams {
  predictions: string;
  validation?: string;
  bootstrapRounds: number;
  seed: number;
}

export class EvaluationRunner implements JobRunner {
  readonly kinds = ["evaluation"] as const;

  constructor(
    private readonly datasetsRoot: string,
    private readonly evaluationsRoot: string,
  ) {}

  async run(ctx: JobContext): Promise<JobOutcome> {
    const params = ctx.job.params as unknown as EvaluationParams;
    const file = (field: string, name: string) => {
      const path = resolveUnderRoot(field, this.datasetsRoot, name);
      if (!path) throw new JobFailure("not_found", `${field}: "${name}" is not under the datasets root`);
      return path;
    };
    let input: Parameters<typeof evaluatePredictions>[0];
    try {
      input = {
        predictions: readPredictionsCsv(file("predictions", params.predictions)),
        validation: params.validation ? readPredictionsCsv(file("validation", params.validation)) : null,
      };
    } catch (error) {
      if (error instanceof JobFailure) throw error;
      throw new JobFailure("invalid_predictions", (error as Error).message);
    }
    ctx.progress(0, 1, "evaluating");
    const document = evaluatePredictions(input, {
      bootstrapRounds: params.bootstrapRounds,
      seed: params.seed,
    });
    const folder = join(this.evaluationsRoot, ctx.job.id);
    await ctx.guard();
    const files = await writeEvaluationOutputs(document, folder);
    await ctx.step(1, 1);
    return {
      result: {
        macroAuroc: document.overall.macroAuroc.value,
        underdiagnosisRate: document.overall.underdiagnosisRate.value,
        report: `/v1/evaluations/${ctx.job.id}/report`,
        files: files.length,
      },
    };
  }
}
