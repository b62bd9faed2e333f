import { RACES, type Race } from "../records.ts";

/**
 * Maps the race/ethnicity vocabularies of the source datasets onto the four groups of the study.
 * Anything that is not clearly one of them (Other, Native American, Pacific Islander, multiple, unknown,
 * declined) becomes null, i.e. "no group", rather than being forced into the nearest one.
 */

const NON_HISPANIC = /\bnon[- ]?hispanic\b|\bnon[- ]?latin[oa]\b|\bnot hispanic\b|\bnot latin[oa]\b/i;
const HISPANIC = /hispanic|latin[oa]/i;

function mentionsHispanic(text: string): boolean {
  return HISPANIC.test(text) && !NON_HISPANIC.test(text);
}

/**
 * CheXpert's demographics table: `PRIMARY_RACE` ("White", "White, non-Hispanic", "Black or African
 * American", "Asian", "Asian, Hispanic", "Other", ...) and `ETHNICITY` ("Hispanic/Latino",
 * "Non-Hispanic/Non-Latino", "Unknown", ...). Hispanic ethnicity takes precedence over the race
 * column, as in the usual four-group coding (Gichoya et al. 2022, Glocker et al. 2023).
 */
export function mapChexpertRace(primaryRace: string, ethnicity: string): Race | null {
  if (mentionsHispanic(ethnicity) || mentionsHispanic(primaryRace)) return "HISPANIC";
  const race = primaryRace.trim().toLowerCase();
  if (race.startsWith("white")) return "WHITE";
  if (race.startsWith("black")) return "BLACK";
  if (race.startsWith("asian")) return "ASIAN";
  return null;
}

/**
 * MIMIC-IV `admissions.race` (`ethnicity` before v2.0): "WHITE", "WHITE - OTHER EUROPEAN",
 * "BLACK/AFRICAN AMERICAN", "BLACK/CAPE VERDEAN", "ASIAN - CHINESE", "HISPANIC/LATINO - PUERTO RICAN",
 * "HISPANIC OR LATINO", ... "SOUTH AMERICAN" and "PORTUGUESE" stay null: MIMIC lists them apart from
 * its Hispanic/Latino categories and we do not re-code them.
 */
export function mapMimicRace(race: string): Race | null {
  const text = race.trim().toUpperCase();
  if (text.startsWith("HISPANIC") || text.startsWith("LATINO")) return "HISPANIC";
  if (text.startsWith("WHITE")) return "WHITE";
  if (text.startsWith("BLACK")) return "BLACK";
  if (text.startsWith("ASIAN")) return "ASIAN";
  return null;
}

/**
 * The `Race` column written by the phantom and by tools that export RoentGen-style data: one of the four
 * group names (any case), or blank / UNKNOWN / OTHER for no group. `undefined` means unrecognised.
 */
export function parseRaceGroup(value: string): Race | null | undefined {
  const text = value.trim().toUpperCase();
  if (text === "" || text === "UNKNOWN" || text === "OTHER") return null;
  return (RACES as readonly string[]).includes(text) ? (text as Race) : undefined;
}
