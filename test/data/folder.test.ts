import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadFolder } from "../../packages/data/src/loaders/folder.ts";
import { formatPrompt, parsePrompt } from "../../packages/data/src/loaders/prompt.ts";
import { fixtures } from "./helpers.ts";

const folder = join(fixtures, "folder");

describe("RoentGen-v2 prompts", () => {
  it("parses the template with and without race", () => {
    expect(parsePrompt("74 year old BLACK male. No acute intrathoracic abnormalities identified.")).toEqual({
      age: 74,
      race: "BLACK",
      sex: "male",
      impression: "No acute intrathoracic abnormalities identified.",
    });
    expect(parsePrompt("45 year old female. Small left pleural effusion.")).toEqual({
      age: 45,
      race: null,
      sex: "female",
      impression: "Small left pleural effusion.",
    });
    expect(parsePrompt("8 year old hispanic Female.")).toEqual({
      age: 8,
      race: "HISPANIC",
      sex: "female",
      impression: "",
    });
  });

  it("rejects text that does not follow it", () => {
    for (const text of [
      "a chest radiograph",
      "74 year old PURPLE male. x",
      "year old male. x",
      "74 years old male. x",
    ]) {
      expect(parsePrompt(text)).toBeNull();
    }
  });

  it("formats what it parses", () => {
    for (const text of [
      "61 year old ASIAN female. Moderate cardiomegaly.",
      "30 year old male. Normal chest.",
    ]) {
      expect(formatPrompt(parsePrompt(text)!)).toBe(text);
    }
  });
});

describe("loadFolder", () => {
  it("skip mode: loads image + prompt pairs and reports every unpaired or unreadable prompt", () => {
    const result = loadFolder(folder, { onError: "skip" });
    expect(
      result.records.map((record) => [record.patientId, record.age, record.race, record.sex, record.split]),
    ).toEqual([
      ["img001", 74, "BLACK", "male", null],
      ["img002", 45, null, "female", null],
      ["train/img003", 63, "ASIAN", "female", "train"],
      ["truncated", 58, "HISPANIC", "male", null],
    ]);
    expect(result.records[0]).toMatchObject({
      imagePath: join(folder, "img001.png"),
      frontal: true,
      prompt: "74 year old BLACK male. No acute intrathoracic abnormalities identified.",
      source: { file: join(folder, "img001.txt"), row: null },
    });
    expect(result.issues.map((issue) => [issue.kind, issue.file])).toEqual([
      ["missing-image", join(folder, "lonely.txt")],
      ["age-out-of-range", join(folder, "old.txt")],
      ["missing-prompt", join(folder, "orphan.png")],
      ["malformed-prompt", join(folder, "weird.txt")],
    ]);
    expect(result.skipped).toBe(4);
  });

  it("fail mode: throws the first problem", () => {
    expect(() => loadFolder(folder, { onError: "fail" })).toThrow(
      `${join(folder, "lonely.txt")}: prompt has no image beside it (looked for .png, .jpg, .jpeg)`,
    );
  });
});
