/** RoentGen-v2 prompts from records and fields, and the word tokenizer (no GPU). */
import { blankLabels, type CxrRecord, institutionIds, parsePrompt, planPhantomCohort } from "@cxr/data";
import {
  END_ID,
  impressionFromFindings,
  NORMAL_IMPRESSION,
  negativePromptFor,
  PAD_ID,
  PATIENT_PLACEHOLDER,
  PromptError,
  patientSentence,
  promptFromFields,
  promptFromRecord,
  reportedSide,
  START_ID,
  splitWords,
  TokenizerError,
  UNKNOWN_ID,
  WordTokenizer,
} from "@cxr/diffusion";
import { describe, expect, it } from "vitest";

function record(overrides: Partial<CxrRecord> = {}): CxrRecord {
  return {
    patientId: "p1",
    studyId: "s1",
    imagePath: "/data/p1/s1.png",
    view: "PA",
    frontal: true,
    sex: "female",
    age: 72,
    race: "BLACK",
    institution: null,
    labels: blankLabels(),
    split: "train",
    prompt: null,
    source: { file: "/data/train.csv", row: 7 },
    ...overrides,
  };
}

describe("prompts", () => {
  it("follows '{age} year old {RACE} {sex}. {impression}' from labels", () => {
    const labels = { ...blankLabels(), Cardiomegaly: 1 as const, "Pleural Effusion": 1 as const };
    expect(promptFromRecord(record({ labels }))).toBe(
      "72 year old BLACK female. Cardiomegaly and pleural effusion.",
    );
    expect(promptFromRecord(record({ labels }), { race: false })).toBe(
      "72 year old female. Cardiomegaly and pleural effusion.",
    );
    const three = { ...labels, Edema: 1 as const, Pneumonia: -1 as const, Fracture: 0 as const };
    expect(promptFromRecord(record({ labels: three, sex: "male", age: 64.6, race: null }))).toBe(
      "65 year old male. Cardiomegaly, pulmonary edema, possible pneumonia and pleural effusion.",
    );
    expect(promptFromRecord(record({ labels: three }), { uncertain: "omit" })).toMatch(
      /Cardiomegaly, pulmonary edema and pleural effusion\.$/,
    );
  });

  it("No Finding and no positive label give the normal statement", () => {
    const labels = { ...blankLabels(), "No Finding": 1 as const, Cardiomegaly: 0 as const };
    expect(promptFromRecord(record({ labels }))).toBe(`72 year old BLACK female. ${NORMAL_IMPRESSION}`);
    expect(impressionFromFindings([])).toBe(NORMAL_IMPRESSION);
    expect(impressionFromFindings(["No Finding"])).toBe(NORMAL_IMPRESSION);
  });

  it("keeps the impression of a record's own prompt, and agrees with the phantom's Prompt column", () => {
    const studies = planPhantomCohort({ count: 200, institutions: institutionIds(), seed: 3 });
    for (const study of studies) {
      const { demographics } = study.parameters;
      const fromRecord = promptFromRecord(
        record({
          sex: demographics.sex,
          age: demographics.age,
          race: demographics.race,
          labels: study.labels,
          prompt: study.prompt,
        }),
      );
      expect(fromRecord).toBe(study.prompt);
    }
    // From labels alone the phantom's normal studies read the same normal statement.
    const normal = studies.find((study) => study.impression === NORMAL_IMPRESSION)!;
    const { demographics } = normal.parameters;
    expect(
      promptFromRecord(
        record({
          sex: demographics.sex,
          age: demographics.age,
          race: demographics.race,
          labels: normal.labels,
        }),
        { impression: "labels" },
      ),
    ).toBe(normal.prompt);
  });

  it("reportedSide reads the side a report impression gives a lateralised finding", () => {
    expect(
      reportedSide("Moderate pulmonary edema with moderate right pleural effusion.", "Pleural Effusion"),
    ).toBe("right");
    expect(reportedSide("Small bilateral pleural effusions.", "Pleural Effusion")).toBe("bilateral");
    // Two clauses, one side each: both sides.
    expect(
      reportedSide("Moderate right pleural effusion and small left pleural effusion.", "Pleural Effusion"),
    ).toBe("bilateral");
    // The side belongs to the clause that names the finding, not to its neighbours.
    expect(
      reportedSide("Right lower lobe consolidation and small left pleural effusion.", "Pleural Effusion"),
    ).toBe("left");
    expect(
      reportedSide("Right lower lobe consolidation and small left pleural effusion.", "Consolidation"),
    ).toBe("right");
    expect(reportedSide("Left basilar atelectasis.", "Atelectasis")).toBe("left");
    expect(reportedSide("Small apical pneumothorax on the LEFT.", "Pneumothorax")).toBe("left");
    // No side named, a finding the impression does not name, a label that has no side.
    expect(reportedSide("Pleural effusion.", "Pleural Effusion")).toBeNull();
    expect(reportedSide("Left lower lobe consolidation.", "Pleural Effusion")).toBeNull();
    expect(reportedSide("Cardiomegaly with left pleural effusion.", "Cardiomegaly")).toBeNull();
  });

  it("label prompts with sides name the side the phantom drew, for every effusion and pneumothorax it reports", () => {
    const studies = planPhantomCohort({ count: 600, institutions: institutionIds(), seed: 5 });
    const kinds = { pleuralEffusion: "Pleural Effusion", pneumothorax: "Pneumothorax" } as const;
    let checked = 0;
    for (const study of studies) {
      for (const [kind, label] of Object.entries(kinds)) {
        if (study.labels[label] !== 1) continue;
        const drawn = new Set(
          study.parameters.findings
            .filter((finding) => finding.kind === kind)
            .map((finding) => (finding as { side: string }).side),
        );
        const expected = drawn.size === 2 ? "bilateral" : [...drawn][0];
        expect(reportedSide(study.impression, label), study.impression).toBe(expected);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(50);
    const { demographics } = studies[0].parameters;
    const sided = record({
      sex: demographics.sex,
      age: demographics.age,
      race: null,
      labels: { ...blankLabels(), Cardiomegaly: 1, "Pleural Effusion": 1, Atelectasis: -1 },
      prompt:
        "72 year old female. Cardiomegaly with small left pleural effusion and possible right basilar atelectasis.",
    });
    expect(promptFromRecord(sided, { impression: "labels", sides: true })).toBe(
      `${demographics.age} year old female. Cardiomegaly, possible right atelectasis and left pleural effusion.`,
    );
    expect(promptFromRecord(sided, { impression: "labels" })).toBe(
      `${demographics.age} year old female. Cardiomegaly, possible atelectasis and pleural effusion.`,
    );
    // Without a report impression there is no side to give.
    expect(promptFromRecord({ ...sided, prompt: null }, { impression: "labels", sides: true })).toBe(
      `${demographics.age} year old female. Cardiomegaly, possible atelectasis and pleural effusion.`,
    );
  });

  it("promptFromFields takes label names and free phrases; the result parses back", () => {
    const prompt = promptFromFields({
      sex: "female",
      age: 72,
      race: "BLACK",
      findings: ["Cardiomegaly", "small left pleural effusion"],
    });
    expect(prompt).toBe("72 year old BLACK female. Cardiomegaly and small left pleural effusion.");
    expect(parsePrompt(prompt)).toEqual({
      age: 72,
      race: "BLACK",
      sex: "female",
      impression: "Cardiomegaly and small left pleural effusion.",
    });
    expect(promptFromFields({ sex: "male", age: 30, findings: [] })).toBe(
      `30 year old male. ${NORMAL_IMPRESSION}`,
    );
  });

  it("patientSentence and negativePromptFor: {patient} is the demographic sentence of fields or of a text prompt", () => {
    expect(patientSentence({ sex: "female", age: 72.4, race: "BLACK" })).toBe("72 year old BLACK female.");
    expect(patientSentence({ sex: "male", age: 30 })).toBe("30 year old male.");
    const fields = {
      sex: "female" as const,
      age: 70,
      race: "WHITE" as const,
      findings: ["Pleural Effusion"],
    };
    expect(negativePromptFor(PATIENT_PLACEHOLDER, fields)).toBe("70 year old WHITE female.");
    expect(negativePromptFor(`{patient} ${NORMAL_IMPRESSION}`, fields)).toBe(
      `70 year old WHITE female. ${NORMAL_IMPRESSION}`,
    );
    // Text prompts are read back with the template; the race is optional.
    expect(negativePromptFor("{patient} Edema.", "65 year old male. Cardiomegaly.")).toBe(
      "65 year old male. Edema.",
    );
    // No placeholder: the text as given, whatever the prompt.
    expect(negativePromptFor("blurry", "an enlarged heart")).toBe("blurry");
    expect(negativePromptFor("", fields)).toBe("");
    expect(() => negativePromptFor("{patient}", "an enlarged heart")).toThrow(PromptError);
    expect(() => negativePromptFor("{patient}", { sex: "x" as never, age: 5, findings: [] })).toThrow(
      /patientSentence: sex must be "female" or "male"/,
    );
  });

  it("missing demographics are an error naming the record", () => {
    expect(() => promptFromRecord(record({ sex: null }))).toThrow(PromptError);
    expect(() => promptFromRecord(record({ age: null }))).toThrow(/train\.csv row 7 \(study s1\): age/);
    expect(() => promptFromFields({ sex: "female", age: -3, findings: [] })).toThrow(/age must be/);
  });
});

describe("WordTokenizer", () => {
  const prompts = [
    "72 year old BLACK female. Cardiomegaly and small left pleural effusion.",
    "45 year old WHITE male. No acute cardiopulmonary abnormality.",
    "45 year old female. Cardiomegaly.",
  ];

  it("splits lower-cased words, numbers and punctuation", () => {
    expect(splitWords("72 year old BLACK female. Cardiomegaly, 4th-6th ribs!")).toEqual([
      "72",
      "year",
      "old",
      "black",
      "female",
      ".",
      "cardiomegaly",
      ",",
      "4",
      "th",
      "-",
      "6",
      "th",
      "ribs",
      "!",
    ]);
    expect(splitWords("")).toEqual([]);
  });

  it("builds the vocabulary by frequency after the special tokens and encodes [start] ... [end] [pad]", () => {
    const tokenizer = WordTokenizer.fromPrompts(prompts, { maxLength: 16 });
    expect(tokenizer.vocabulary.slice(0, 4)).toEqual(["[pad]", "[unk]", "[start]", "[end]"]);
    // "." appears 6 times, the most frequent word.
    expect(tokenizer.vocabulary[4]).toBe(".");
    const encoded = tokenizer.encode([prompts[1]], { warn: () => {} });
    expect(encoded.ids.length).toBe(16);
    expect(encoded.ids[0]).toBe(START_ID);
    expect(encoded.lengths).toEqual([13]);
    expect(encoded.ids[12]).toBe(END_ID);
    expect([...encoded.ids.slice(13)]).toEqual([PAD_ID, PAD_ID, PAD_ID]);
    expect(tokenizer.decode(encoded.ids)).toBe(
      "[start] 45 year old white male . no acute cardiopulmonary abnormality . [end]",
    );
    expect(encoded.unknown).toEqual([0]);
    expect(encoded.truncated).toEqual([false]);
  });

  it("the empty prompt is [start] [end] and padding: the unconditional input", () => {
    const tokenizer = WordTokenizer.fromPrompts(prompts, { maxLength: 6 });
    const { ids, lengths } = tokenizer.encode(["", "   "]);
    expect([...ids]).toEqual([START_ID, END_ID, 0, 0, 0, 0, START_ID, END_ID, 0, 0, 0, 0]);
    expect(lengths).toEqual([2, 2]);
  });

  it("unknown words map to [unk], never an error", () => {
    const tokenizer = WordTokenizer.fromPrompts(prompts, { maxLength: 12 });
    const { ids, unknown } = tokenizer.encode(["99 year old ASIAN female. Pneumothorax."]);
    expect(unknown).toEqual([3]);
    expect(ids[1]).toBe(UNKNOWN_ID); // 99
    expect(ids[4]).toBe(UNKNOWN_ID); // asian
    expect(ids[7]).toBe(UNKNOWN_ID); // pneumothorax
    expect(ids[5]).toBe(tokenizer.idOf("female"));
  });

  it("truncates an over-long prompt to the context with a warning, keeping the end token", () => {
    const tokenizer = WordTokenizer.fromPrompts(prompts, { maxLength: 9 });
    const warnings: string[] = [];
    const { ids, lengths, truncated } = tokenizer.encode([prompts[0], prompts[2]], {
      warn: (message) => warnings.push(message),
    });
    expect(truncated).toEqual([true, false]);
    expect(lengths).toEqual([9, 9]);
    expect(ids[8]).toBe(END_ID);
    expect(tokenizer.decode(ids.slice(0, 9))).toBe("[start] 72 year old black female . cardiomegaly [end]");
    expect(tokenizer.decode(ids.slice(9))).toBe("[start] 45 year old female . cardiomegaly . [end]");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /prompt 0 was truncated .* up to 9 tokens: "and small left pleural effusion \."/,
    );
  });

  it("keeps the most frequent words under maxVocabulary; minCount drops rare ones", () => {
    const capped = WordTokenizer.fromPrompts(prompts, { maxLength: 8, maxVocabulary: 6 });
    expect(capped.vocabularySize).toBe(6);
    expect(capped.vocabulary.slice(4)).toEqual([".", "old"]);
    const frequent = WordTokenizer.fromPrompts(prompts, { maxLength: 8, minCount: 3 });
    expect(frequent.vocabulary.slice(4)).toEqual([".", "old", "year"]);
    expect(() => WordTokenizer.fromPrompts(prompts, { maxLength: 8, maxVocabulary: 3 })).toThrow(
      TokenizerError,
    );
  });

  it("round-trips through JSON; a malformed tokenizer.json is a clear error", () => {
    const tokenizer = WordTokenizer.fromPrompts(prompts, { maxLength: 10 });
    const copy = WordTokenizer.fromJSON(JSON.parse(JSON.stringify(tokenizer.toJSON())));
    expect(copy.vocabulary).toEqual(tokenizer.vocabulary);
    expect(copy.encode(prompts).ids).toEqual(tokenizer.encode(prompts).ids);
    expect(() => WordTokenizer.fromJSON(null, "x/tokenizer.json")).toThrow(
      /x\/tokenizer.json: not a JSON object/,
    );
    expect(() => WordTokenizer.fromJSON({ kind: "bpe", version: 1 }, "t.json")).toThrow(
      /expected kind "word"/,
    );
    const json = tokenizer.toJSON();
    expect(() => WordTokenizer.fromJSON({ ...json, vocabulary: ["[pad]", "x"] }, "t.json")).toThrow(
      /vocabulary\[1\] must be the special token "\[unk\]"/,
    );
    expect(() =>
      WordTokenizer.fromJSON({ ...json, vocabulary: [...json.vocabulary, "."] }, "t.json"),
    ).toThrow(/has "\." twice/);
    expect(() => WordTokenizer.fromJSON({ ...json, maxLength: 1 }, "t.json")).toThrow(/maxLength/);
  });
});
