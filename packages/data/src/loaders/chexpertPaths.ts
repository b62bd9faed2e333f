import { existsSync } from "node:fs";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";

/**
 * Where the relative `Path` values of a CheXpert CSV point to. Stanford's CSVs hold paths like
 * `CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`, relative to the folder *above*
 * the dataset, while re-exports (and the phantom) often write them relative to the CSV's own folder.
 * Order of resolution:
 *   1. an explicit image root, when the caller gives one;
 *   2. the first of these layouts under which one of the first few images exists:
 *      the CSV's folder, its parent folder, or the CSV's folder with the path's first segment removed
 *      (the dataset folder was renamed after the CSV was written);
 *   3. with no image found (e.g. a CSV inspected without its images): the parent folder when the
 *      path starts with the CSV folder's own name, else the CSV's folder.
 * Absolute paths are used as they are.
 */
export type PathResolver = (relativePath: string) => string;

const PROBED_ROWS = 8;

export function chexpertPathResolver(
  csvFile: string,
  samplePaths: string[],
  imageRoot?: string,
): PathResolver {
  const csvFolder = dirname(resolve(csvFile));
  const inside = (root: string) => (path: string) => (isAbsolute(path) ? path : join(root, path));
  if (imageRoot !== undefined) return inside(resolve(imageRoot));

  const layouts: PathResolver[] = [
    inside(csvFolder),
    inside(dirname(csvFolder)),
    (path) => (isAbsolute(path) ? path : join(csvFolder, withoutFirstSegment(path))),
  ];
  const probes = samplePaths.filter((path) => path !== "").slice(0, PROBED_ROWS);
  for (const layout of layouts) {
    if (probes.some((path) => existsSync(layout(path)))) return layout;
  }
  const startsWithCsvFolder = probes.length > 0 && firstSegment(probes[0]) === basename(csvFolder);
  return startsWithCsvFolder ? layouts[1] : layouts[0];
}

function segments(path: string): string[] {
  return path.split(/[\\/]+/).filter((segment) => segment !== "");
}

function firstSegment(path: string): string {
  return segments(path)[0] ?? "";
}

function withoutFirstSegment(path: string): string {
  return segments(path).slice(1).join("/");
}

/** CheXpert stores images as `<patient>/<study>/<view file>`; returns null if the path is shorter. */
export function patientAndStudy(path: string): { patientId: string; studyId: string } | null {
  const parts = segments(path);
  if (parts.length < 3) return null;
  const patient = parts[parts.length - 3];
  return { patientId: patient, studyId: `${patient}/${parts[parts.length - 2]}` };
}
