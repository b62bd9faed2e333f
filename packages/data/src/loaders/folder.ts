import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { extname, join, relative, resolve, sep } from "node:path";
import { IssueLog } from "../errors.ts";
import { blankLabels, type CxrRecord, type Split } from "../records.ts";
import { type LoadOptions, type LoadResult, resolveLoadOptions } from "./options.ts";
import { parsePrompt } from "./prompt.ts";

export const FOLDER_IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg"] as const;

/**
 * Loads RoentGen-v2's folder format: every image (`.png`, `.jpg`, `.jpeg`, in any sub-folder) with a
 * same-named `.txt` holding its prompt `"{age} year old {RACE} {female|male}. {impression}"`. Sex, age
 * and race are read back from the prompt. Each image counts as its own patient and study (generated
 * images have no patients), is frontal (RoentGen-v2 generates frontal views) and has blank labels: the
 * impression is free text, and reading findings out of it would be guessing. A top-level sub-folder
 * named train/valid/validate/test sets the split.
 */
export function loadFolder(path: string, options: LoadOptions = {}): LoadResult {
  const { onError, ageRange } = resolveLoadOptions(options);
  const log = new IssueLog(onError);
  const root = resolve(path);
  if (!existsSync(root) || !statSync(root).isDirectory()) throw new Error(`${path} is not a folder`);

  const files = listFiles(root);
  const fileSet = new Set(files);
  const isImage = (file: string) =>
    (FOLDER_IMAGE_EXTENSIONS as readonly string[]).includes(extname(file).toLowerCase());
  const imageStems = new Set(files.filter(isImage).map((file) => file.slice(0, -extname(file).length)));
  const records: CxrRecord[] = [];
  for (const file of files) {
    const extension = extname(file);
    const stem = file.slice(0, file.length - extension.length);
    if (extension === ".txt") {
      if (!imageStems.has(stem)) {
        const message = `prompt has no image beside it (looked for ${FOLDER_IMAGE_EXTENSIONS.join(", ")})`;
        log.report({ kind: "missing-image", file, row: null, column: null, message });
        log.skip();
      }
      continue;
    }
    if (!isImage(file)) continue;
    const promptFile = `${stem}.txt`;
    if (!fileSet.has(promptFile)) {
      log.report({
        kind: "missing-prompt",
        file,
        row: null,
        column: null,
        message: `no prompt file ${promptFile}`,
      });
      log.skip();
      continue;
    }
    const prompt = readFileSync(promptFile, "utf8").trim();
    const parts = parsePrompt(prompt);
    if (parts === null) {
      const message = `prompt "${prompt}" does not follow "{age} year old {RACE} {female|male}. {impression}"`;
      log.report({ kind: "malformed-prompt", file: promptFile, row: null, column: null, message });
      log.skip();
      continue;
    }
    if (parts.age < ageRange.min || parts.age > ageRange.max) {
      const message = `age ${parts.age} is outside ${ageRange.min}-${ageRange.max} years`;
      log.report({ kind: "age-out-of-range", file: promptFile, row: null, column: null, message });
      log.skip();
      continue;
    }
    const id = relative(root, stem).split(sep).join("/");
    records.push({
      patientId: id,
      studyId: id,
      imagePath: file,
      view: null,
      frontal: true,
      sex: parts.sex,
      age: parts.age,
      race: parts.race,
      institution: null,
      labels: blankLabels(),
      split: splitFromFolder(id),
      prompt,
      source: { file: promptFile, row: null },
    });
  }
  return { records, issues: log.issues, skipped: log.skipped, files: [root] };
}

/** All files under a folder, sorted so that loading is deterministic whatever the file system's order. */
function listFiles(folder: string): string[] {
  const files: string[] = [];
  const entries = readdirSync(folder, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
  for (const entry of entries) {
    const path = join(folder, entry.name);
    if (entry.isDirectory()) files.push(...listFiles(path));
    else if (entry.isFile()) files.push(path);
  }
  return files;
}

function splitFromFolder(id: string): Split | null {
  const parts = id.split("/");
  if (parts.length < 2) return null;
  const folder = parts[0].toLowerCase();
  if (folder === "train") return "train";
  if (folder === "valid" || folder === "validate") return "valid";
  if (folder === "test") return "test";
  return null;
}
