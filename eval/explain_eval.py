"""`whyrec eval explain`: explanation quality per backend (template, tiny LLaVA before/after tuning, ...).

Input: JSONL records of generated explanations, one per (request, item):
    {"item_id": ..., "text": "<the explanation>", "backend": "grounded",
     "reference": "<a reference explanation>" | "references": [...],   (optional: BLEU/ROUGE/FMR)
     "features": ["colour:black", ...],                               (optional: FMR truth)
     "id": ..., "request": ...}                                         (optional)
References can also come from instruction data (LLaVA form: the "gpt" turns), matched by record
`id`, else by `item_id`. Grounding goes through a checker with the `synth_data.grounding.check`
contract (text, product) -> result with supported / contradicted / not_stated, ok, precision.
"""
from __future__ import annotations

import importlib
import json
import logging
import re as _re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from tqdm import tqdm

from eval import metrics as M
from eval import text_metrics as T
from retrieval.catalog import Catalog

log = logging.getLogger(__name__)

DEFAULT_CHECKER = "synth_data.grounding:check"
RENAME = {"hallucinated": "hallucination_rate", "claims": "claims_per_explanation",
          "contradicted": "contradicted_per_explanation", "not_stated": "not_stated_per_explanation"}


def load_checker(spec: str = DEFAULT_CHECKER) -> Callable:
    """A grounding checker from "module:function"."""
    mod, _, fn = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), fn or "check")
    except (ImportError, AttributeError) as err:
        raise ValueError(f"grounding checker {spec!r} is not available ({err}); it comes with synth_data.grounding") from None


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {n}: not JSON ({err.msg})") from None
    return out


def references_from_instructions(records: Iterable[dict]) -> dict[str, list[str]]:
    """{record id and item id -> the gpt answers} from instruction data in LLaVA form."""
    out: dict[str, list[str]] = defaultdict(list)
    for r in records:
        answers = [t["value"] for t in r.get("conversations", []) if t.get("from") == "gpt"]
        if not answers:
            continue
        if r.get("id") is not None:
            out[f"id:{r['id']}"] += answers
        if r.get("item_id") is not None:
            out[f"item:{r['item_id']}"] += answers
    return dict(out)


def parse_backend(spec: str) -> tuple[str, str, dict[str, str]]:
    """"name" or "label=name:key=value,key=value" -> (label, explainer name, factory kwargs)."""
    label, _, rest = spec.partition("=") if "=" in spec.split(":", 1)[0] else (None, "", spec)
    name, _, args = rest.partition(":")
    kwargs = dict(a.split("=", 1) for a in args.split(",") if a) if args else {}
    return label or spec, name, kwargs


def _request_of(record: dict) -> str:
    """The shopper's words: the record's meta.request (synth_data writes it), else the human turn."""
    req = (record.get("meta") or {}).get("request") or record.get("request")
    if req:
        return str(req)
    human = next((t["value"] for t in record.get("conversations", []) if t.get("from") == "human"), "")
    return human.replace("<image>", "").strip()


def generate_explanations(instructions: list[dict], catalog: Catalog, backends: list[str], kinds: list[str] | None = None,
                          max_records: int | None = None, seed: int = 0) -> list[dict]:
    """Explanations of each backend for the requests of instruction records (LLaVA form), with the
    records' gpt answers as references. Backends are `synth_data.explain` explainers by name
    ("grounded", "llava" once llava_tuning registers it), optionally "label=name:key=value"."""
    from synth_data.explain import gather_evidence, get_explainer

    recs = [r for r in instructions if (not kinds or r.get("kind") in kinds) and str(r.get("item_id")) in catalog and _request_of(r)]
    if max_records is not None and len(recs) > max_records:
        rng = np.random.default_rng(seed)
        recs = [recs[i] for i in sorted(rng.choice(len(recs), max_records, replace=False))]
    if not recs:
        raise ValueError("no instruction records with a request and a catalog item to explain")
    out = []
    for spec in backends:
        label, name, kwargs = parse_backend(spec)
        if name == "llava":
            importlib.import_module("llava_tuning")  # registers the llava explainer
        explainer = get_explainer(name, **kwargs)
        for r in tqdm(recs, desc=f"explaining with {label}", unit="expl", mininterval=5):
            request, product = _request_of(r), catalog[str(r["item_id"])]
            rat = explainer.explain(request, product, gather_evidence(request, product))
            refs = [t["value"] for t in r.get("conversations", []) if t.get("from") == "gpt"]
            out.append({"id": r.get("id"), "item_id": product.id, "kind": r.get("kind"), "request": request, "text": rat.text,
                        "backend": label, "references": refs, "fallback_reason": getattr(rat, "fallback_reason", None)})
    return out


def _features(raw) -> set[T.Feature]:
    out = set()
    for f in raw or []:
        kind, value = (f.split(":", 1) if isinstance(f, str) else f)
        out.add((kind.strip(), value.strip()))
    return out


def evaluate_explanations(records: list[dict], catalog: Catalog, check: Callable | None, references: dict[str, list[str]] | None = None,
                          bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics per backend. `check=None` leaves grounding out."""
    from retrieval.vocabulary import item_values

    if not records:
        raise ValueError("no explanation records to evaluate")
    references = references or {}
    groups: dict[str, list[dict]] = defaultdict(list)
    for n, r in enumerate(records, 1):
        if "item_id" not in r or "text" not in r:
            raise ValueError(f"record {n} lacks item_id or text")
        if str(r["item_id"]) not in catalog:
            raise ValueError(f"record {n}: item {r['item_id']} is not in the catalog")
        groups[str(r.get("backend", "unknown"))].append(r)
    out: dict[str, Any] = {}
    for backend, recs in groups.items():
        texts = [str(r["text"]) for r in recs]
        products = [catalog[str(r["item_id"])] for r in recs]
        refs = []
        for r in recs:
            rs = r.get("references") or ([r["reference"]] if r.get("reference") else None)
            if rs is None:
                rs = references.get(f"id:{r.get('id')}") or references.get(f"item:{r['item_id']}")
            refs.append(list(rs) if rs else [])
        gen_feats = [T.features(t) for t in texts]
        truth = [_features(r.get("features")) or (set().union(*(T.features(x) for x in rf)) if rf else set())
                 for r, rf in zip(recs, refs)]
        available = set()
        for p in products:
            available |= {(k, v) for k, vs in item_values(p).items() for v in vs}
        res: dict[str, Any] = {"n": len(recs), "with_reference": sum(bool(r) for r in refs)}
        # per-record values, bootstrapped
        cols: dict[str, list[float]] = defaultdict(list)
        with_ref = [i for i, r in enumerate(refs) if r]
        for i in with_ref:
            for k, v in T.rouge_scores(texts[i], refs[i]).items():
                cols[k].append(v)
        if check is not None:
            for r, t, p in tqdm(list(zip(recs, texts, products)), desc=f"grounding {backend}", unit="expl", mininterval=5):
                for k, v in T.grounding_scores(check, t, p, r.get("request")).items():
                    cols[k].append(v)
        for k, vals in cols.items():
            est = M.bootstrap_ci(vals, bootstrap, seed=seed)
            res[RENAME.get(k, k)] = est.to_dict()
        if with_ref:
            stats = np.stack([T.bleu_stats(texts[i], refs[i]) for i in with_ref])
            idx = np.random.default_rng(seed).integers(0, len(with_ref), (bootstrap, len(with_ref)))
            for n in (1, 4):
                boots = [T.bleu_from_stats(stats[b].sum(0), n) for b in idx]
                lo, hi = np.quantile(boots, [0.025, 0.975])
                res[f"bleu{n}"] = {"mean": T.bleu_from_stats(stats.sum(0), n), "low": float(lo), "high": float(hi), "n": len(with_ref)}
        fallbacks = [r.get("fallback_reason") for r in recs if "fallback_reason" in r]
        if fallbacks:
            res["fallback_rate"] = sum(bool(f) for f in fallbacks) / len(fallbacks)
        res["unique_sentence_ratio"] = T.unique_sentence_ratio(texts)
        res["distinct1"] = T.distinct_n(texts, 1)
        res["distinct2"] = T.distinct_n(texts, 2)
        res["feature_match_ratio"] = T.feature_match_ratio(gen_feats, truth)
        res["feature_coverage_ratio"] = T.feature_coverage_ratio(gen_feats, available)
        res["feature_diversity"] = T.feature_diversity(gen_feats, seed=seed)
        out[backend] = res
    return out


EXPLAIN_COLUMNS = ("grounding_precision", "hallucination_rate", "bleu1", "bleu4", "rouge1", "rouge2", "rougeL",
                   "unique_sentence_ratio", "feature_match_ratio", "feature_coverage_ratio", "feature_diversity")


def explain_markdown(result: dict) -> str:
    cols = [c for c in EXPLAIN_COLUMNS if any(c in r for r in result.values())]
    lines = ["| backend | n | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for backend, r in result.items():
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, dict):
                cells.append(f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]")
            elif v is None or v != v:
                cells.append("-")
            else:
                cells.append(f"{v:.3f}")
        lines.append(f"| {backend} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Issue 11: rationale and describe-from-picture quality on held-out product groups (bench/llava_quality.py)
# ---------------------------------------------------------------------------------------------------------
_QUOTED = _re.compile(r'"[^"]*"|“[^”]*”')
_CLAUSE = _re.compile(r"[.;:!?]|,|\bbut\b", _re.IGNORECASE)
_SENTENCE = _re.compile(r"(?<=[.!?])\s+")
_NEGATION = _re.compile(r"\b(not|no|never|without|n't|nor|instead of|rather than|asked for)\b|n't\b", _re.IGNORECASE)
MISFIT_SIGNAL = _re.compile(r"\b(not|but|however|falls? short|partly|partial|instead|other results|other options|keep looking|"
                            r"something else|keep that in mind|"
                            r"does not|doesn't|isn't|aren't|misses|catch|only if|where you asked)\b|n't\b|you asked for \"",
                            _re.IGNORECASE)
# a text that says the item fits ("just as you asked") cannot be honest about a misfit
FIT_CLAIM = _re.compile(r"just as you asked|exactly what you|what you asked for|what you are looking for|what you described|"
                        r"matches your request|fits what you asked|ticks the boxes|good match|this one works|good news|"
                        r"so (it|they) match", _re.IGNORECASE)
_STOP = set("a an the in of with and or at to on for from by its it is are this that as some soft".split())


def _forms(value: str) -> set[str]:
    """A catalog value and its naive inflections: 'stripe' -> stripes, striped; 'dot' -> dotted."""
    v = value.lower().strip()
    out = {v, v + "s", v + "es", v + "d", v + "ed"}
    if v and v[-1] not in "aeiouy":
        out.add(v + v[-1] + "ed")
    return out


class WordListChecker:
    """A second, deliberately simple claim checker, independent of synth_data.grounding: plain word
    lists of the catalog's own colour, product type and pattern values, matched longest first in each
    affirmative clause (quoted words and clauses with a negation are not judged). A claim is true
    when its words and one of the item's values for that kind contain one another ("blue" for "Dark Blue";
    the colour master counts, so "light blue" for a dark blue item passes: the checker is lenient on shade).
    Only the first product-type word of a sentence is judged (later ones are parts: "with a belt")."""

    KEYS = {"colour": ("colour", "colour_master"), "product_type": ("product_type",), "pattern": ("pattern",)}
    EXTRA = {"pattern": {"solid": {"plain"}}}
    # values that are also material words ("denim trousers", "made of metal") or too generic to judge
    SKIP = {"other", "unknown", "undefined", "", "other pattern", "mixed", "pattern", "metal", "metallic", "denim", "mesh", "lace",
            "transparent", "structure", "contrast", "treatment", "neps", "slub", "sequin", "application/3d"}

    def __init__(self, products: Iterable):
        self.phrases: dict[str, dict[str, str]] = {k: {} for k in self.KEYS}  # kind -> surface form -> base value
        for p in products:
            facts = p.facts()
            for kind, keys in self.KEYS.items():
                for key in keys:
                    v = str(facts.get(key, "")).lower().strip()
                    v = _re.sub(r"^other\s+", "", v)
                    if v in self.SKIP or len(v) < 3:
                        continue
                    for f in _forms(v) | self.EXTRA.get(kind, {}).get(v, set()):
                        self.phrases[kind].setdefault(f, v)
        alts = sorted({f for d in self.phrases.values() for f in d}, key=len, reverse=True)
        self.pattern = _re.compile(r"(?<![\w-])(" + "|".join(_re.escape(a) for a in alts) + r")(?![\w-])", _re.IGNORECASE)

    def truth(self, product) -> dict[str, set[frozenset]]:
        facts = product.facts()
        out: dict[str, set[frozenset]] = {}
        for kind, keys in self.KEYS.items():
            vals = {_re.sub(r"^other\s+", "", str(facts.get(k, "")).lower().strip()) for k in keys}
            out[kind] = {frozenset(v.replace("-", " ").split()) for v in vals if v not in self.SKIP}
            if kind == "pattern" and any(v == frozenset({"solid"}) for v in out[kind]):
                out[kind].add(frozenset({"plain"}))
        return out

    def claims(self, text: str) -> list[tuple[str, str]]:
        """(kind, phrase) of every judged claim."""
        out = []
        text = _QUOTED.sub(" ", text)
        for sentence in _SENTENCE.split(text):
            typed = False
            for clause in _CLAUSE.split(sentence):
                if not clause or _NEGATION.search(clause):
                    typed = typed or bool(clause and self._has_type(clause))
                    continue
                for m in self.pattern.finditer(clause):
                    phrase = m.group(1).lower()
                    kinds = [k for k in self.KEYS if phrase in self.phrases[k]]
                    for kind in kinds[:1]:
                        if kind == "product_type":
                            if typed:
                                continue
                            typed = True
                        out.append((kind, phrase))
        return out

    def _has_type(self, clause: str) -> bool:
        return any(m.group(1).lower() in self.phrases["product_type"] for m in self.pattern.finditer(clause))

    def judge(self, text: str, product) -> tuple[int, int, list[str]]:
        """(true claims, false claims, the false ones as 'kind: phrase')."""
        truth = self.truth(product)
        good = bad = 0
        wrong = []
        for kind, phrase in self.claims(text):
            base = frozenset(self.phrases[kind][phrase].replace("-", " ").split())
            if any(base <= t or t <= base for t in truth[kind]):
                good += 1
            else:
                bad += 1
                wrong.append(f"{kind}: {phrase}")
        return good, bad, wrong


def informativeness(text: str, product, request: str) -> int:
    """Distinct description facts a text states that the request did not name (synth_data.details.stated_facts:
    one definition, which the offline item-text job also aims at)."""
    from synth_data.details import stated_facts

    return stated_facts(text, product, request)


def honest_about_misfit(text: str, product, request: str, contradicted: bool) -> bool:
    """A misfit's text is honest when it says so (a negation, "but", "falls short"), does not also say
    the item fits, states nothing false, and names what misses: the shopper's word for an unmet term,
    its value, or the item's own value of that kind ('you asked for grey, but it is black')."""
    from retrieval.vocabulary import item_values
    from synth_data.explain import gather_evidence

    if contradicted or not MISFIT_SIGNAL.search(text) or FIT_CLAIM.search(text):
        return False
    low = text.lower()
    values = item_values(product)
    for rt in gather_evidence(request, product, values=values).unmet:
        names = {rt.quote.lower(), rt.term.value.lower(), *values.get(rt.term.kind, ())}
        if any(len(n) > 2 and _re.search(r"(?<!\w)" + _re.escape(n) + r"(?!\w)", low) for n in names):
            return True
    return False


def heldout_items(catalog: Catalog, val_fraction: float, heldout_fraction: float, require_image: bool = True) -> list:
    """Items of the product groups `split_of` puts in 'heldout' (never planned into instruction data)."""
    from synth_data.tasks import split_of

    out = []
    for p in catalog.products:
        if split_of(p, val_fraction, heldout_fraction=heldout_fraction) != "heldout":
            continue
        if require_image and not ((f := catalog.image_file(p)) is not None and f.exists()):
            continue
        out.append(p)
    if not out:
        raise ValueError("no held-out items: is heldout_fraction > 0 and does the catalog have images?")
    return out


def heldout_pairs(catalog: Catalog, val_fraction: float, heldout_fraction: float, n: int, seed: int = 0) -> list[dict]:
    """`n` (request, item) pairs on held-out groups, half of them misfits (the item's facts contradict a
    request term), each with a distinct item: {"request", "item_id", "fits", "unmet"}."""
    from synth_data.explain import gather_evidence
    from synth_data.tasks import Planner, sample_request

    planner = Planner(catalog, seed=seed, val_fraction=val_fraction, heldout_fraction=heldout_fraction, splits=("heldout",))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(planner.pool))
    pairs: list[dict] = []
    used: set[str] = set()
    want_misfit = True
    for i in order:
        if len(pairs) >= n:
            break
        anchor = planner.pool[int(i)]
        request = sample_request(planner.views[anchor.id], planner.rng)
        if want_misfit:
            _, negative = planner.positive_and_negative(request, anchor)
            if negative is None or negative.id in used:
                continue
            item = negative
        else:
            item = anchor
            if item.id in used:
                continue
        ev = gather_evidence(request, item)
        if bool(ev.unmet) != want_misfit:
            continue
        used.add(item.id)
        pairs.append({"request": request, "item_id": item.id, "fits": not ev.unmet,
                      "unmet": [f"{r.term.kind}: {r.term.value}" for r in ev.unmet]})
        want_misfit = not want_misfit
    if len(pairs) < n:
        log.warning("only %d held-out pairs (asked for %d)", len(pairs), n)
    return pairs


def _ci(values, bootstrap: int, seed: int) -> dict:
    return M.bootstrap_ci([float(v) for v in values], bootstrap, seed=seed).to_dict()


def _precision_values(pairs: list[tuple[int, int]]) -> tuple[list[float], float]:
    """Per-text precision (NaN without claims, dropped by the bootstrap) and the pooled one."""
    per = [g / (g + b) if g + b else float("nan") for g, b in pairs]
    tot = sum(g + b for g, b in pairs)
    return per, (sum(g for g, _ in pairs) / tot if tot else float("nan"))


def rationale_quality(rows: list[dict], catalog: Catalog, simple: WordListChecker, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Metrics of one system's rationales. rows: {"request", "item_id", "fits", "raw", "served", "fallback_reason"}."""
    from synth_data.grounding import check

    out: dict[str, Any] = {"n": len(rows), "misfits": sum(not r["fits"] for r in rows)}
    for which in ("raw", "served"):
        proj, simp, halluc, honest, info_fit, info_all, claims = [], [], [], [], [], [], []
        for r in rows:
            p, text = catalog[r["item_id"]], r[which] or ""
            res = check(text, p, request=r["request"])
            proj.append((len(res.supported), len(res.contradicted)))
            g, b, _ = simple.judge(text, p)
            simp.append((g, b))
            claims.append(len(res.supported) + len(res.contradicted) + len(res.not_stated))
            halluc.append(float(bool(res.contradicted or res.not_stated)))
            n_info = informativeness(text, p, r["request"])
            info_all.append(n_info)
            if r["fits"]:
                info_fit.append(n_info)
            else:
                honest.append(float(honest_about_misfit(text, p, r["request"], bool(res.contradicted))))
        per, pooled = _precision_values(proj)
        per_s, pooled_s = _precision_values(simp)
        out[which] = {
            "claim_precision_project": {**_ci(per, bootstrap, seed), "pooled": pooled},
            "claim_precision_wordlist": {**_ci(per_s, bootstrap, seed), "pooled": pooled_s},
            "hallucination_rate": _ci(halluc, bootstrap, seed),
            "honest_on_misfits": _ci(honest, bootstrap, seed),
            "description_facts_per_fitting_rationale": _ci(info_fit, bootstrap, seed),
            "description_facts_per_rationale": _ci(info_all, bootstrap, seed),
            "claims_per_rationale": float(np.mean(claims)) if claims else 0.0,
            "empty": sum(not (r[which] or "").strip() for r in rows),
        }
    out["fallback_rate"] = _ci([float(bool(r.get("fallback_reason"))) for r in rows], bootstrap, seed)
    return out


def describe_quality(rows: list[dict], catalog: Catalog, simple: WordListChecker, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Describe-from-picture against the human descriptions: BLEU-4 (corpus, bootstrap), ROUGE-L F1, and the
    precision of the colour / type / pattern it states. rows: {"item_id", "text"}."""
    from retrieval.vocabulary import item_values
    from synth_data.grounding import check

    texts = [r["text"] or "" for r in rows]
    refs = [[catalog[r["item_id"]].description] for r in rows]
    stats = np.stack([T.bleu_stats(t, rf) for t, rf in zip(texts, refs)])
    idx = np.random.default_rng(seed).integers(0, len(rows), (bootstrap, len(rows)))
    boots = [T.bleu_from_stats(stats[b].sum(0), 4) for b in idx]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    out: dict[str, Any] = {"n": len(rows), "bleu4": {"mean": T.bleu_from_stats(stats.sum(0), 4), "low": float(lo), "high": float(hi)},
                           "rougeL": _ci([T.rouge_scores(t, rf)["rougeL"] for t, rf in zip(texts, refs)], bootstrap, seed)}
    for kind in ("colour", "product_type", "pattern"):
        proj, simp = [], []
        for r, t in zip(rows, texts):
            p = catalog[r["item_id"]]
            res = check(t, p, values=item_values(p))
            proj.append((sum(x.kind == kind for x in res.supported), sum(x.kind == kind for x in res.contradicted)))
            truth = simple.truth(p)
            g = b = 0
            for k, phrase in simple.claims(t):
                if k != kind:
                    continue
                base = frozenset(simple.phrases[k][phrase].replace("-", " ").split())
                if any(base <= x or x <= base for x in truth[k]):
                    g += 1
                else:
                    b += 1
            simp.append((g, b))
        per, pooled = _precision_values(proj)
        per_s, pooled_s = _precision_values(simp)
        out[f"{kind}_precision_project"] = {**_ci(per, bootstrap, seed), "pooled": pooled,
                                            "claims": int(sum(a + b for a, b in proj))}
        out[f"{kind}_precision_wordlist"] = {**_ci(per_s, bootstrap, seed), "pooled": pooled_s,
                                             "claims": int(sum(a + b for a, b in simp))}
    return out


def _cell(v: dict | None, digits: int = 3) -> str:
    if not v or v.get("mean") is None or v["mean"] != v["mean"]:
        return "-"
    lo, hi = v.get("low"), v.get("high")
    return f"{v['mean']:.{digits}f}" + (f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None and hi is not None else "")


def quality_markdown(result: dict) -> str:
    """The tables of bench/llava_quality.py's JSON: rationales (raw model text and served text) and describe-from-picture."""
    lines = ["| system | text | claim precision (grounding) | claim precision (word lists) | hallucination | fallback | "
             "honest on misfits | description facts / fitting rationale |", "|---|---|---|---|---|---|---|---|"]
    for name, r in result.get("rationales", {}).items():
        for which in ("raw", "served"):
            x = r[which]
            lines.append(f"| {name} | {which} | {_cell(x['claim_precision_project'])} | {_cell(x['claim_precision_wordlist'])} | "
                         f"{_cell(x['hallucination_rate'])} | {_cell(r['fallback_rate']) if which == 'served' else ''} | "
                         f"{_cell(x['honest_on_misfits'])} | {_cell(x['description_facts_per_fitting_rationale'], 2)} |")
    lines += ["", "| describe from the picture | BLEU-4 | ROUGE-L | colour precision (grounding / word lists) | "
              "type precision | pattern precision |", "|---|---|---|---|---|---|"]
    for name, d in result.get("describe_from_picture", {}).items():
        def pair(kind: str) -> str:
            a, b = d[f"{kind}_precision_project"], d[f"{kind}_precision_wordlist"]
            return f"{_cell(a, 2)} (n={a.get('claims', 0)}) / {_cell(b, 2)} (n={b.get('claims', 0)})"
        lines.append(f"| {name} | {_cell(d['bleu4'])} | {_cell(d['rougeL'])} | {pair('colour')} | {pair('product_type')} | {pair('pattern')} |")
    return "\n".join(lines) + "\n"
