import { describe, expect, it } from "vitest";
import {
  mapChexpertRace,
  mapMimicRace,
  parseRaceGroup,
} from "../../packages/data/src/loaders/demographics.ts";
import { parseLabelValue, parseSex } from "../../packages/data/src/loaders/fields.ts";
import { ageBin } from "../../packages/data/src/records.ts";

describe("race and ethnicity mapping", () => {
  it("CheXpert: PRIMARY_RACE with Hispanic ethnicity taking precedence", () => {
    const cases: [string, string, string | null][] = [
      ["White", "Non-Hispanic/Non-Latino", "WHITE"],
      ["White, non-Hispanic", "Unknown", "WHITE"],
      ["White or Caucasian", "", "WHITE"],
      ["Black or African American", "Non-Hispanic/Non-Latino", "BLACK"],
      ["Black, non-Hispanic", "Not Hispanic", "BLACK"],
      ["Asian", "Non-Hispanic/Non-Latino", "ASIAN"],
      ["Asian - Historical Conv", "Unknown", "ASIAN"],
      ["Other", "Hispanic/Latino", "HISPANIC"],
      ["White", "Hispanic/Latino", "HISPANIC"],
      ["White, Hispanic", "Unknown", "HISPANIC"],
      ["Other, Hispanic", "", "HISPANIC"],
      ["Other", "Non-Hispanic/Non-Latino", null],
      ["Native Hawaiian or Other Pacific Islander", "Non-Hispanic/Non-Latino", null],
      ["Race and Ethnicity Unknown", "Unknown", null],
      ["Patient Refused", "Patient Refused", null],
      ["", "", null],
    ];
    for (const [race, ethnicity, expected] of cases) {
      expect([race, ethnicity, mapChexpertRace(race, ethnicity)]).toEqual([race, ethnicity, expected]);
    }
  });

  it("MIMIC-IV: the group prefix of admissions.race", () => {
    const cases: [string, string | null][] = [
      ["WHITE", "WHITE"],
      ["WHITE - OTHER EUROPEAN", "WHITE"],
      ["BLACK/AFRICAN AMERICAN", "BLACK"],
      ["BLACK/CAPE VERDEAN", "BLACK"],
      ["ASIAN - CHINESE", "ASIAN"],
      ["ASIAN", "ASIAN"],
      ["HISPANIC/LATINO - PUERTO RICAN", "HISPANIC"],
      ["HISPANIC OR LATINO", "HISPANIC"],
      ["SOUTH AMERICAN", null],
      ["AMERICAN INDIAN/ALASKA NATIVE", null],
      ["UNKNOWN", null],
      ["UNABLE TO OBTAIN", null],
      ["OTHER", null],
      ["MULTIPLE RACE/ETHNICITY", null],
    ];
    for (const [race, expected] of cases) expect([race, mapMimicRace(race)]).toEqual([race, expected]);
  });

  it("the phantom's Race column: group names in any case, blank/unknown/other as none, else unrecognised", () => {
    expect(parseRaceGroup("HISPANIC")).toBe("HISPANIC");
    expect(parseRaceGroup(" black ")).toBe("BLACK");
    expect(parseRaceGroup("")).toBeNull();
    expect(parseRaceGroup("Unknown")).toBeNull();
    expect(parseRaceGroup("PURPLE")).toBeUndefined();
  });
});

describe("field coding", () => {
  it("labels: CheXpert's 1.0 / 0.0 / -1.0 / blank, nothing else", () => {
    expect(["1.0", "1", "0.0", "0", "-1.0", "-1", "", " 1.0 "].map(parseLabelValue)).toEqual([
      1,
      1,
      0,
      0,
      -1,
      -1,
      null,
      1,
    ]);
    expect(["2.0", "0.5", "yes", "1.0.0", "NaN", "1e0"].map(parseLabelValue)).toEqual(
      new Array(6).fill(undefined),
    );
  });

  it("sex: CheXpert and MIMIC spellings", () => {
    expect(["Female", "M", "male", "f", "Unknown", "", "Robot"].map(parseSex)).toEqual([
      "female",
      "male",
      "male",
      "female",
      null,
      null,
      undefined,
    ]);
  });

  it("age bins of the fairness study have inclusive lower edges", () => {
    expect([0, 19.9, 20, 39, 40, 60, 79, 80, 90].map(ageBin)).toEqual([
      "0-20",
      "0-20",
      "20-40",
      "20-40",
      "40-60",
      "60-80",
      "60-80",
      "80+",
      "80+",
    ]);
  });
});
