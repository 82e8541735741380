"""How well the grounding checker agrees with hand labels (tests/synth_data/data/grounding_labelled.jsonl).

Each labelled sentence names an item (facts in grounding_items.json) and the claims a careful
reader finds in it: (kind, value, negated) with a verdict supported / contradicted / not_stated.
Words that only look like attributes ("check the size", "pair it with jeans") carry no claim.
We report, per verdict, claim-level precision and recall (a predicted claim counts when its kind,
value, negation and verdict all match a label), how well claims are found at all, and the
sentence-level decision the data filter makes: reject (a contradiction) or keep.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from retrieval.catalog import Product
from synth_data.grounding import check

VERDICTS = ("supported", "contradicted", "not_stated")
_BOTH = {"lace", "denim", "mesh"}  # one word, a pattern and a material: either kind matches


def load_items(path: str | Path) -> dict[str, Product]:
    raw = json.loads(Path(path).read_text())
    return {key: Product(id=key, title=d["title"], description=d.get("description", ""), attributes=dict(d.get("attributes", {})),
                         category=[d["attributes"].get("index_group", ""), d["attributes"].get("product_type", "")],
                         colour=d.get("colour", ""))
            for key, d in raw.items()}


def load_labelled(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _key(kind: str, value: str, negated: bool) -> tuple:
    return ("pattern|material" if value in _BOTH and kind in ("pattern", "material") else kind, value, bool(negated))


def _prf(tp: int, n_pred: int, n_true: int) -> dict:
    p = tp / n_pred if n_pred else 1.0
    r = tp / n_true if n_true else 1.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
            "predicted": n_pred, "labelled": n_true}


def evaluate(labelled: list[dict], items: dict[str, Product]) -> dict:
    """Claim- and sentence-level agreement of `check` with the labels, plus the disagreements."""
    tp, pred_n, true_n = Counter(), Counter(), Counter()
    found_tp = found_pred = found_true = 0
    sent = Counter()
    misses = []
    for row in labelled:
        product = items[row["item"]]
        res = check(row["sentence"], product, request=row.get("request"))
        pred = {(_key(t.kind, t.value, t.negated), v) for v, ts in
                (("supported", res.supported), ("contradicted", res.contradicted), ("not_stated", res.not_stated)) for t in ts}
        true = {(_key(c["kind"], c["value"], c["negated"]), c["verdict"]) for c in row["claims"]}
        for v in VERDICTS:
            p = {k for k, vv in pred if vv == v}
            t = {k for k, vv in true if vv == v}
            tp[v] += len(p & t)
            pred_n[v] += len(p)
            true_n[v] += len(t)
        pk, tk = {k for k, _ in pred}, {k for k, _ in true}
        found_tp += len(pk & tk)
        found_pred += len(pk)
        found_true += len(tk)
        want_reject = any(c["verdict"] == "contradicted" for c in row["claims"])
        did_reject = not res.ok
        sent[(want_reject, did_reject)] += 1
        if pred != true:
            misses.append({"id": row["id"], "item": row["item"], "sentence": row["sentence"],
                           "missed": sorted(f"{v} {'not ' if k[2] else ''}{k[0]}={k[1]}" for k, v in true - pred),
                           "extra": sorted(f"{v} {'not ' if k[2] else ''}{k[0]}={k[1]}" for k, v in pred - true)})
    rej_tp = sent[(True, True)]
    out = {
        "sentences": len(labelled),
        "claims_labelled": sum(true_n.values()),
        "per_verdict": {v: _prf(tp[v], pred_n[v], true_n[v]) for v in VERDICTS},
        "claim_finding": _prf(found_tp, found_pred, found_true),
        "reject_decision": {**_prf(rej_tp, rej_tp + sent[(False, True)], rej_tp + sent[(True, False)]),
                            "accuracy": round((rej_tp + sent[(False, False)]) / max(1, len(labelled)), 4),
                            "false_rejects": sent[(False, True)], "missed_rejects": sent[(True, False)]},
        "sentences_fully_right": len(labelled) - len(misses),
        "disagreements": misses,
    }
    return out


def default_paths() -> tuple[Path, Path]:
    here = Path(__file__).resolve().parents[1] / "tests" / "synth_data" / "data"
    return here / "grounding_labelled.jsonl", here / "grounding_items.json"
