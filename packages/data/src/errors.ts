/**
 * Every problem a loader or the image pipeline meets in user data is a `DataIssue` naming file, row and
 * column. The user chooses what happens next (`onError`): "skip" drops the offending row or image and
 * keeps a log, "fail" stops at the first problem with that problem's message. Nothing is dropped silently.
 */

export const ISSUE_KINDS = [
  "missing-file",
  "missing-column",
  "malformed-row",
  "unknown-label-value",
  "invalid-value",
  "age-out-of-range",
  "missing-image",
  "unreadable-image",
  "missing-prompt",
  "malformed-prompt",
  "unmatched-row",
] as const;
export type IssueKind = (typeof ISSUE_KINDS)[number];

export interface DataIssue {
  kind: IssueKind;
  file: string;
  /** 1-based CSV row with the header as row 1; null when the problem is not tied to a row. */
  row: number | null;
  column: string | null;
  message: string;
}

export const ON_ERROR_MODES = ["skip", "fail"] as const;
export type OnError = (typeof ON_ERROR_MODES)[number];

/** `path:row: column "X": message`, the form used in CLI output and in thrown errors. */
export function formatIssue(issue: DataIssue): string {
  const where = issue.row === null ? issue.file : `${issue.file}:${issue.row}`;
  const column = issue.column === null ? "" : ` column "${issue.column}":`;
  return `${where}:${column} ${issue.message}`;
}

export class DataInputError extends Error {
  readonly issue: DataIssue;
  constructor(issue: DataIssue) {
    super(formatIssue(issue));
    this.name = "DataInputError";
    this.issue = issue;
  }
}

/**
 * Collects issues in skip mode and throws on the first one in fail mode. `skipped` counts the rows or
 * images that were dropped; one dropped row can carry several issues, so the two counts differ.
 */
export class IssueLog {
  readonly onError: OnError;
  readonly issues: DataIssue[] = [];
  skipped = 0;

  constructor(onError: OnError = "fail") {
    this.onError = onError;
  }

  report(issue: DataIssue): void {
    if (this.onError === "fail") throw new DataInputError(issue);
    this.issues.push(issue);
  }

  /** Records that one row or image was dropped because of the issues just reported. */
  skip(count = 1): void {
    this.skipped += count;
  }
}

/** sharp/libvips repeat the same decoder complaint several times, one per line; keep each once. */
export function conciseErrorMessage(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  const lines = [
    ...new Set(
      text
        .split("\n")
        .map((line) => line.trim())
        .filter((line) => line.length > 0),
    ),
  ];
  return lines.join("; ");
}
