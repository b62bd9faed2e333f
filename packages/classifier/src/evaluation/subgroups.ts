/**
 * Subgroups of the fairness analysis (DOMAIN.md §3): sex, age bin, race, the intersections
 * sex x race, sex x age and race x age, and institution when the table has one. Every row belongs to
 * exactly one subgroup per dimension, so a pass over the rows updates one accumulator per dimension.
 */
import { AGE_BINS, RACES, SEXES } from "@cxr/data";
import type { PredictionRow, PredictionTable } from "./predictions.ts";

export const DIMENSIONS = [
  "overall",
  "sex",
  "age",
  "race",
  "sex x race",
  "sex x age",
  "race x age",
  "institution",
] as const;
export type Dimension = (typeof DIMENSIONS)[number];

export interface Subgroup {
  /** Index into per-subgroup arrays; 0 is the whole table. */
  readonly id: number;
  readonly dimension: Dimension;
  /** Readable name: "female", "60-80", "BLACK", "female & BLACK", ... */
  readonly name: string;
  readonly imageCount: number;
  readonly patientCount: number;
}

export interface SubgroupIndex {
  /** The dimensions in use (institution only when every row names one). */
  readonly dimensions: readonly Dimension[];
  /** Subgroups with at least one image, grouped by dimension in a fixed category order. */
  readonly subgroups: readonly Subgroup[];
  /** membership[row * dimensions.length + d]: the row's subgroup id in dimension d. */
  readonly membership: Uint16Array;
  /** Patient index of each row, and the number of distinct patients. */
  readonly patientOfRow: Int32Array;
  readonly patientCount: number;
}

type CategoryOf = (row: PredictionRow) => string;

function categoriesOf(
  dimension: Dimension,
  rows: readonly PredictionRow[],
): { order: string[]; of: CategoryOf } {
  const cross = (a: readonly string[], b: readonly string[]): string[] =>
    a.flatMap((x) => b.map((y) => `${x} & ${y}`));
  switch (dimension) {
    case "overall":
      return { order: ["all"], of: () => "all" };
    case "sex":
      return { order: [...SEXES], of: (row) => row.sex };
    case "age":
      return { order: [...AGE_BINS], of: (row) => row.ageBin };
    case "race":
      return { order: [...RACES], of: (row) => row.race };
    case "sex x race":
      return { order: cross(SEXES, RACES), of: (row) => `${row.sex} & ${row.race}` };
    case "sex x age":
      return { order: cross(SEXES, AGE_BINS), of: (row) => `${row.sex} & ${row.ageBin}` };
    case "race x age":
      return { order: cross(RACES, AGE_BINS), of: (row) => `${row.race} & ${row.ageBin}` };
    case "institution": {
      const names = [...new Set(rows.map((row) => row.institution ?? ""))].sort();
      return { order: names, of: (row) => row.institution ?? "" };
    }
  }
}

export function buildSubgroupIndex(table: PredictionTable): SubgroupIndex {
  const rows = table.rows;
  const hasInstitution = rows.every((row) => row.institution !== null);
  const dimensions = DIMENSIONS.filter((dimension) => dimension !== "institution" || hasInstitution);
  const dimensionCount = dimensions.length;

  const patientIndexById = new Map<string, number>();
  const patientOfRow = new Int32Array(rows.length);
  rows.forEach((row, index) => {
    let patient = patientIndexById.get(row.patientId);
    if (patient === undefined) {
      patient = patientIndexById.size;
      patientIndexById.set(row.patientId, patient);
    }
    patientOfRow[index] = patient;
  });

  const subgroups: Subgroup[] = [];
  const membership = new Uint16Array(rows.length * dimensionCount);
  dimensions.forEach((dimension, dimensionIndex) => {
    const { order, of } = categoriesOf(dimension, rows);
    const rowsByCategory = new Map<string, number[]>(order.map((category) => [category, []]));
    rows.forEach((row, index) => {
      rowsByCategory.get(of(row))!.push(index);
    });
    for (const category of order) {
      const members = rowsByCategory.get(category)!;
      if (members.length === 0) continue;
      const id = subgroups.length;
      if (id > 0xffff) throw new Error(`${table.source}: more than 65536 subgroups (too many institutions?)`);
      const patients = new Set<number>();
      for (const row of members) {
        membership[row * dimensionCount + dimensionIndex] = id;
        patients.add(patientOfRow[row]);
      }
      subgroups.push({
        id,
        dimension,
        name: category,
        imageCount: members.length,
        patientCount: patients.size,
      });
    }
  });
  return { dimensions, subgroups, membership, patientOfRow, patientCount: patientIndexById.size };
}
