/**
 * Datasets and models are named, never given as paths: a name resolves under its configured root,
 * and anything that could leave the root is refused before the file system is touched (`..`,
 * separators, absolute paths, NUL bytes), then once more after resolving symlinks.
 */
import { existsSync, realpathSync } from "node:fs";
import { mkdir, rename, writeFile } from "node:fs/promises";
import { dirname, join, sep } from "node:path";

export class PathRefused extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
    this.name = "PathRefused";
  }
}

/** A name: letters, digits, `.`, `_`, `-`; 1 to 128 characters; not `.` or `..`. */
export const NAME_PATTERN = /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}$/;

export function checkName(field: string, name: string): void {
  if (name.includes("\u0000")) throw new PathRefused(field, `${field}: NUL bytes are not allowed in a name`);
  if (name.startsWith("/") || /^[A-Za-z]:[\\/]/.test(name)) {
    throw new PathRefused(field, `${field}: give a name under the configured root, not an absolute path`);
  }
  if (name.includes("..") || name.includes("/") || name.includes("\\")) {
    throw new PathRefused(field, `${field}: "${name}" is not a plain name (no "..", "/" or "\\")`);
  }
  if (!NAME_PATTERN.test(name)) {
    throw new PathRefused(field, `${field}: "${name}" must be 1-128 letters, digits, ".", "_" or "-"`);
  }
}

/**
 * Resolves `name` to an existing entry under `root`. Refuses bad names and entries whose real path
 * (after symlinks) is outside the root's real path. Returns null when nothing of that name exists.
 */
export function resolveUnderRoot(field: string, root: string, name: string): string | null {
  checkName(field, name);
  const candidate = join(root, name);
  if (!existsSync(candidate)) return null;
  const realRoot = realpathSync(root);
  const real = realpathSync(candidate);
  if (real !== realRoot && !real.startsWith(realRoot + sep)) {
    throw new PathRefused(field, `${field}: "${name}" points outside the configured root`);
  }
  return real;
}

/** Writes a file atomically: a temporary file in the same folder, then a rename over the target. */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temporary = `${path}.tmp-${process.pid}-${Math.random().toString(16).slice(2)}`;
  await writeFile(temporary, data, { flush: true });
  await rename(temporary, path);
}
