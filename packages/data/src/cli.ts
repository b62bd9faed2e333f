import { type Command, InvalidArgumentError, Option } from "commander";
import { ON_ERROR_MODES, type OnError } from "./errors.ts";
import { IMAGE_CHECK_LEVELS, type ImageCheckLevel } from "./images/check.ts";
import { formatSummary } from "./inspect/format.ts";
import { DEFAULT_INSPECT_OPTIONS, inspectDataset } from "./inspect/inspect.ts";
import { DATASET_FORMATS, type DatasetFormat } from "./loaders/index.ts";

interface InspectFlags {
  format: DatasetFormat;
  json?: boolean;
  onError: OnError;
  images: ImageCheckLevel | "none";
  maxProblems: number;
  demographics?: string;
  patients?: string;
  admissions?: string;
  imageRoot?: string;
}

/** `cxr data ...`: dataset commands of this package. */
export function registerCommands(program: Command): void {
  const data = program
    .command("data")
    .description("chest-radiograph datasets: CheXpert, MIMIC-CXR-JPG, prompt folders");
  data
    .command("inspect")
    .description(
      "count images per split, view, sex, age, race, institution and label value, and list problems",
    )
    .argument("<path>", "dataset folder (or, for chexpert, one CSV file)")
    .addOption(
      new Option("--format <format>", "dataset layout").choices(DATASET_FORMATS).makeOptionMandatory(),
    )
    .option("--json", "print the report as JSON")
    .addOption(
      new Option("--on-error <mode>", "skip bad rows and list them, or stop at the first")
        .choices(ON_ERROR_MODES)
        .default(DEFAULT_INSPECT_OPTIONS.onError),
    )
    .addOption(
      new Option("--images <level>", "check image files: none, exists (stat), decode (full read)")
        .choices(["none", ...IMAGE_CHECK_LEVELS])
        .default(DEFAULT_INSPECT_OPTIONS.images),
    )
    .option(
      "--max-problems <count>",
      "problems listed one by one",
      parseCount,
      DEFAULT_INSPECT_OPTIONS.maxProblems,
    )
    .option(
      "--demographics <file>",
      "chexpert: demographics table as CSV (PATIENT, PRIMARY_RACE, ETHNICITY, ...)",
    )
    .option("--patients <file>", "mimic: MIMIC-IV patients.csv (default: the one in the dataset folder)")
    .option("--admissions <file>", "mimic: MIMIC-IV admissions.csv (default: the one in the dataset folder)")
    .option("--image-root <folder>", "folder the image paths are relative to (default: found automatically)")
    .action(async (path: string, flags: InspectFlags) => {
      const report = await inspectDataset(flags.format, path, {
        onError: flags.onError,
        images: flags.images,
        maxProblems: flags.maxProblems,
        loader: {
          demographicsCsv: flags.demographics,
          patientsCsv: flags.patients,
          admissionsCsv: flags.admissions,
          imageRoot: flags.imageRoot,
        },
      });
      const output = flags.json
        ? `${JSON.stringify(report, null, 2)}\n`
        : formatSummary(
            report.summary,
            `${flags.format} dataset ${path} (${report.files.length} files read)`,
          );
      process.stdout.write(output);
    });
}

function parseCount(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0)
    throw new InvalidArgumentError(`expected a whole number, got "${text}"`);
  return value;
}
