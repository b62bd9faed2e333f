#!/usr/bin/python3
"""Independent reference for the evaluation tests: AUROC from scikit-learn, confusion counts from
scikit-learn at the F1-optimal threshold, subgroups and gaps written out plainly in Python.

usage: reference.py PREDICTIONS.csv VALIDATION.csv MIN_SUBGROUP_SIZE > result.json

The threshold rule is the one packages/classifier/src/evaluation/thresholds.ts documents:
candidates are the distinct probabilities of rows with truth 0/1 in the validation file; predicted
positive iff probability >= threshold; F1 = 2TP / (2TP + FP + FN), compared exactly (fractions);
ties go to the lowest threshold; no positive row means no threshold.
"""
import csv
import json
import sys
from fractions import Fraction

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

LABELS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
          "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
          "Pleural Other", "Fracture", "Support Devices"]
SEX = {"f": "female", "female": "female", "m": "male", "male": "male"}


def age_bin(age):
    if age < 20:
        return "0-20"
    if age < 40:
        return "20-40"
    if age < 60:
        return "40-60"
    if age < 80:
        return "60-80"
    return "80+"


def read(path):
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    lower = {name.strip().lower(): name for name in rows[0].keys()}
    labels = [label for label in LABELS if f"{label}_true".lower() in lower]
    table = {"labels": labels, "truth": {}, "prob": {}, "groups": {}}
    for label in labels:
        truth_column = lower[f"{label}_true".lower()]
        prob_column = lower[f"{label}_prob".lower()]
        table["truth"][label] = np.array(
            [float(row[truth_column]) if row[truth_column].strip() != "" else np.nan for row in rows])
        table["prob"][label] = np.array([float(row[prob_column]) for row in rows])
    sex = [SEX[row[lower["sex"]].strip().lower()] for row in rows]
    race = [row[lower["race"]].strip().upper() for row in rows]
    age = [age_bin(float(row[lower["age"]])) for row in rows]
    groups = {
        "overall": ["all"] * len(rows),
        "sex": sex,
        "age": age,
        "race": race,
        "sex x race": [f"{s} & {r}" for s, r in zip(sex, race)],
        "sex x age": [f"{s} & {a}" for s, a in zip(sex, age)],
        "race x age": [f"{r} & {a}" for r, a in zip(race, age)],
    }
    if "institution" in lower:
        groups["institution"] = [row[lower["institution"]].strip() for row in rows]
    table["groups"] = groups
    return table


def known(truth):
    return (truth == 0) | (truth == 1)


def f1_threshold(truth, prob):
    mask = known(truth)
    y, p = truth[mask].astype(int), prob[mask]
    if y.sum() == 0:
        return None, False
    scores = []
    for candidate in sorted(set(p.tolist())):
        predicted = (p >= candidate).astype(int)
        tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
        scores.append((Fraction(int(2 * tp), int(2 * tp + fp + fn)), candidate))
    best_f1 = max(f1 for f1, _ in scores)
    winners = [candidate for f1, candidate in scores if f1 == best_f1]
    return min(winners), len(winners) > 1


def rates(truth, prob, threshold):
    mask = known(truth)
    y, p = truth[mask].astype(int), prob[mask]
    result = {"auroc": None, "accuracy": None, "truePositiveRate": None, "falsePositiveRate": None,
              "precision": None, "positives": int(y.sum()), "negatives": int((1 - y).sum())}
    if len(set(y.tolist())) == 2:
        result["auroc"] = float(roc_auc_score(y, p))
    if threshold is None or len(y) == 0:
        return result
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1]).ravel())
    result["accuracy"] = (tp + tn) / (tp + tn + fp + fn)
    result["truePositiveRate"] = tp / (tp + fn) if tp + fn > 0 else None
    result["falsePositiveRate"] = fp / (fp + tn) if fp + tn > 0 else None
    result["precision"] = tp / (tp + fp) if tp + fp > 0 else None
    return result


def main():
    predictions, validation, minimum = read(sys.argv[1]), read(sys.argv[2]), int(sys.argv[3])
    fitted = {label: f1_threshold(validation["truth"][label], validation["prob"][label])
              for label in predictions["labels"]}
    thresholds = {label: threshold for label, (threshold, _) in fitted.items()}
    # Labels whose best F1 is reached at several thresholds: there the tie rule decides.
    f1_ties = [label for label, (_, tied) in fitted.items() if tied]
    subgroups = []
    for dimension, names in predictions["groups"].items():
        names = np.array(names)
        for name in sorted(set(names.tolist())):
            members = names == name
            entry = {"dimension": dimension, "name": name, "images": int(members.sum()), "labels": {}}
            for label in predictions["labels"]:
                entry["labels"][label] = rates(predictions["truth"][label][members],
                                               predictions["prob"][label][members], thresholds[label])
            nf = entry["labels"].get("No Finding")
            entry["underdiagnosisRate"] = nf["falsePositiveRate"] if nf else None
            fnr = None if not nf or nf["truePositiveRate"] is None else 1 - nf["truePositiveRate"]
            entry["overdiagnosisRate"] = fnr
            subgroups.append(entry)
    # Gaps: a subgroup takes part when the metric's own denominator reaches the minimum (No Finding
    # negatives for underdiagnosis, positives for overdiagnosis, the smaller class for AUROC) and its
    # value is defined; every pair of members gives value(a) - value(b), a and b in sorted order.
    pairs, members = [], []
    denominator = {
        "underdiagnosisRate": lambda s: s["labels"]["No Finding"]["negatives"],
        "overdiagnosisRate": lambda s: s["labels"]["No Finding"]["positives"],
    }
    for dimension in predictions["groups"]:
        if dimension == "overall":
            continue
        in_dimension = [s for s in subgroups if s["dimension"] == dimension]
        if "No Finding" in predictions["labels"]:
            for metric in ["underdiagnosisRate", "overdiagnosisRate"]:
                taking = sorted((s["name"], s[metric]) for s in in_dimension
                                if denominator[metric](s) >= minimum and s[metric] is not None)
                for i in range(len(taking)):
                    for j in range(i + 1, len(taking)):
                        pairs.append({"dimension": dimension, "metric": metric, "first": taking[i][0],
                                      "second": taking[j][0], "difference": taking[i][1] - taking[j][1]})
        for label in predictions["labels"]:
            names = sorted(s["name"] for s in in_dimension
                           if min(s["labels"][label]["positives"], s["labels"][label]["negatives"]) >= minimum
                           and s["labels"][label]["auroc"] is not None)
            members.append({"dimension": dimension, "metric": "auroc", "label": label, "members": names})
    json.dump({"thresholds": thresholds, "f1Ties": f1_ties, "subgroups": subgroups, "pairs": pairs,
               "members": members}, sys.stdout)


if __name__ == "__main__":
    main()
