import { RACES, type Race, type Sex } from "../records.ts";

/** The parts of a RoentGen-v2 prompt: `"{age} year old {RACE} {female|male}. {impression}"`. */
export interface PromptParts {
  age: number;
  /** Race is optional in RoentGen-v2 prompts. */
  race: Race | null;
  sex: Sex;
  impression: string;
}

export function formatPrompt(parts: PromptParts): string {
  const race = parts.race === null ? "" : `${parts.race} `;
  return `${parts.age} year old ${race}${parts.sex}. ${parts.impression}`;
}

const PROMPT_PATTERN = new RegExp(
  `^(\\d{1,3}) year old (?:(${RACES.join("|")}) )?(female|male)\\.(?:\\s+([\\s\\S]*))?$`,
  "i",
);

/** Reads demographics back from a prompt; null when the text does not follow the template. */
export function parsePrompt(text: string): PromptParts | null {
  const match = PROMPT_PATTERN.exec(text.trim());
  if (match === null) return null;
  const [, age, race, sex, impression] = match;
  return {
    age: Number(age),
    race: race === undefined ? null : (race.toUpperCase() as Race),
    sex: sex.toLowerCase() as Sex,
    impression: (impression ?? "").trim(),
  };
}
