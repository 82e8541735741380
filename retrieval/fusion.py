"""Fusing dense, lexical (BM25) and catalog-fact scores, and fitting the fusion per catalog without labels.

Every candidate of a query has three signals: the cosine of its vector to the query vector, its
BM25 score, and its fact score (the kind-weighted share of the query's named values its catalog
facts back; a violated negation counts -1). A `FusionSettings` turns them into one score, either
as a weighted sum (BM25 divided by the query's best BM25 score) or as weighted reciprocal rank
fusion (sum of w / (k + rank)). Items that break a negation go below the rest in every fused
ranker.

`fit_fusion` picks the settings for a catalog with no labels: it writes pseudo-queries from the
catalog's own products (product type + colour + pattern + material + a title word, said with the
language pack's synonyms, some with a typo), ranks with every setting of a small grid, and keeps
the one with the best nDCG@10 on the fitting products; the products held out from fitting give
the honest score in the report (`fusion.json` beside the index).
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from retrieval.search import Searcher

log = logging.getLogger(__name__)

FUSION_FILE = "fusion.json"
RANKERS = ("dense", "facts", "bm25", "rrf", "fitted")


@dataclass(frozen=True)
class FusionSettings:
    """How the three signals become one score: `linear` (weighted sum) or `rrf` (weighted reciprocal rank)."""

    kind: str = "rrf"
    w_dense: float = 1.0
    w_bm25: float = 1.0
    w_facts: float = 1.0
    rrf_k: float = 60.0

    def __post_init__(self):
        if self.kind not in ("linear", "rrf"):
            raise ValueError(f"fusion kind must be linear or rrf, not {self.kind!r}")


# the fixed rankers; "fitted" comes from a fit report, "rrf" is the label-free default
FIXED: dict[str, FusionSettings] = {
    "dense": FusionSettings("linear", 1.0, 0.0, 0.0),
    "bm25": FusionSettings("linear", 1e-6, 1.0, 0.0),  # dense only breaks ties
    "facts": FusionSettings("linear", 1e-3, 0.0, 1.0),
    "rrf": FusionSettings("rrf", 1.0, 1.0, 1.0, 60.0),
}


@dataclass
class Signals:
    """The candidates of one query (index rows) and their three signals."""

    rows: np.ndarray
    dense: np.ndarray
    bm25: np.ndarray
    facts: np.ndarray
    violates: np.ndarray  # bool: breaks a negated value


def _rank_of(x: np.ndarray) -> np.ndarray:
    """1 + how many candidates score strictly higher (ties share the better rank)."""
    order = np.sort(x)[::-1]
    return 1 + np.searchsorted(-order, -x, side="left")


def fuse(s: Signals, st: FusionSettings) -> np.ndarray:
    """One score per candidate."""
    if len(s.rows) == 0:
        return np.zeros(0, np.float32)
    if st.kind == "linear":
        top = float(s.bm25.max()) if len(s.bm25) else 0.0
        score = st.w_dense * s.dense + (st.w_bm25 * s.bm25 / top if top > 0 else 0.0) + st.w_facts * s.facts
        if st.w_facts > 0 or st.w_bm25 > 0:
            score = score - 10.0 * s.violates
        return score.astype(np.float32)
    score = np.zeros(len(s.rows), np.float64)
    if st.w_dense:
        score += st.w_dense / (st.rrf_k + _rank_of(s.dense))
    if st.w_bm25:
        score += np.where(s.bm25 > 0, st.w_bm25 / (st.rrf_k + _rank_of(s.bm25)), 0.0)
    if st.w_facts:
        score += np.where(s.facts > 0, st.w_facts / (st.rrf_k + _rank_of(s.facts)), 0.0)
    score -= 10.0 * s.violates
    return score.astype(np.float32)


def grid() -> list[FusionSettings]:
    """The settings `fit_fusion` tries (the fixed rankers among them)."""
    out = list(FIXED.values())
    for wb in (0.0, 0.1, 0.25, 0.5, 1.0, 2.0):
        for wf in (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0):
            out.append(FusionSettings("linear", 1.0, wb, wf))
    for k in (5.0, 20.0, 60.0):
        for wd in (0.0, 0.5, 1.0):
            for wb in (0.0, 0.5, 1.0):
                for wf in (0.0, 0.5, 1.0, 2.0):
                    if wd or wb or wf:
                        out.append(FusionSettings("rrf", wd, wb, wf, k))
    return list(dict.fromkeys(out))


def ndcg_at(ranked_relevant: np.ndarray, n_relevant: int, k: int = 10) -> float:
    """Binary nDCG@k of a ranking given as relevance flags, with `n_relevant` relevant items in all."""
    if n_relevant <= 0:
        return 0.0
    gains = ranked_relevant[:k].astype(np.float64)
    disc = 1.0 / np.log2(np.arange(2, len(gains) + 2))
    ideal = (1.0 / np.log2(np.arange(2, min(k, n_relevant) + 2))).sum()
    return float((gains * disc).sum() / ideal)


# ---------------------------------------------------------------------- pseudo-queries
@dataclass
class PseudoQuery:
    text: str
    source: int  # index row of the product it was written from
    values: dict[str, str] = field(default_factory=dict)  # kind -> value the query states
    title_word: str | None = None
    typo: bool = False


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 5:
        return word
    i = rng.randrange(1, len(word) - 1)
    op = rng.choice(("swap", "drop", "double"))
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == "drop":
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def _say(vocab, kind: str, value: str, rng: random.Random) -> str:
    """A surface phrase that reads back as this value (a synonym when the pack has one)."""
    options = sorted(p for p in vocab.synonyms.get(kind, {}).get(value, [value]) if (kind, value) in vocab.reads(p)) or [value]
    return rng.choice(options)


def pseudo_queries(searcher: "Searcher", n: int = 300, seed: int = 0) -> list[PseudoQuery]:
    """Shopper-like queries written from the catalog's own products (see module doc)."""
    rng = random.Random(seed)
    vocab = searcher.vocab
    structured = searcher.structured_values
    rows = list(range(len(searcher.products)))
    rng.shuffle(rows)
    out: list[PseudoQuery] = []
    for row in rows:
        if len(out) >= n:
            break
        vals = structured[row]
        types = sorted(v for v in vals.get("product_type", ()) if not vocab.families.get("product_type", {}).get(v))
        types = types or sorted(vals.get("product_type", ()))
        if not types:
            continue
        values = {"product_type": rng.choice(types)}
        for kind, prob in (("colour", 0.7), ("pattern", 0.3), ("material", 0.3)):
            have = sorted(v for v in vals.get(kind, ()) if v != "solid")
            if have and rng.random() < prob:
                values[kind] = rng.choice(have)
        words = [_say(vocab, kind, v, rng) for kind, v in values.items() if kind != "product_type"]
        words.append(_say(vocab, "product_type", values["product_type"], rng))
        title_word = None
        if rng.random() < 0.35:
            cands = sorted(w for w in set(searcher.title_tokens[row]) if len(w) > 3 and not w.isdigit() and not vocab.reads(w)
                     and w not in vocab.stopwords)
            if cands:
                title_word = rng.choice(cands)
                words.insert(0, title_word)
        typo = rng.random() < 0.15
        if typo:
            j = rng.randrange(len(words))
            parts = words[j].split()
            k = rng.randrange(len(parts))
            parts[k] = _typo(parts[k], rng)
            words[j] = " ".join(parts)
        out.append(PseudoQuery(" ".join(words), row, values, title_word, typo))
    return out


def relevant_mask(searcher: "Searcher", q: PseudoQuery) -> np.ndarray:
    """Items whose structured facts hold every value the pseudo-query states (and its title word)."""
    mask = np.ones(len(searcher.products), bool)
    for kind, value in q.values.items():
        m = np.zeros(len(searcher.products), bool)
        for v in searcher.vocab.accepts(kind, value):
            rows = searcher.strong_postings.get((kind, v))
            if rows is not None:
                m[rows] = True
        mask &= m
    if q.title_word:
        mask &= np.array([q.title_word in toks for toks in searcher.title_tokens])
    return mask


# ---------------------------------------------------------------------- fitting
def fit_fusion(searcher: "Searcher", n_queries: int = 300, holdout: float = 0.3, seed: int = 0, k: int = 10) -> dict:
    """Choose fusion settings for this catalog from pseudo-queries (no labels); returns the report."""
    t0 = time.time()
    queries = pseudo_queries(searcher, n_queries, seed)
    if len(queries) < 10:
        raise ValueError(f"only {len(queries)} pseudo-queries could be written (items need a product type); cannot fit fusion")
    texts = [q.text for q in queries]
    # in small batches: query texts stay out of the tower feature cache (it holds catalog texts)
    qvecs = np.concatenate([searcher.encoder.encode_text(texts[i: i + 16]) for i in range(0, len(texts), 16)])
    prepared = []
    for q, qv in zip(queries, qvecs):
        query = searcher.read(q.text)
        sig = searcher.signals(query, qv, k, None)
        rel = relevant_mask(searcher, q)
        prepared.append((sig, rel[sig.rows], int(rel.sum())))
    t_prep = time.time() - t0
    rng = random.Random(seed + 1)
    order = list(range(len(queries)))
    rng.shuffle(order)
    n_hold = max(1, int(round(holdout * len(order))))
    held, fit = set(order[:n_hold]), order[n_hold:]

    def score(st: FusionSettings, which) -> float:
        vals = []
        for i in which:
            sig, rel, n_rel = prepared[i]
            s = fuse(sig, st)
            top = np.argsort(-s, kind="stable")[:k]
            vals.append(ndcg_at(rel[top], n_rel, k))
        return float(np.mean(vals)) if vals else 0.0

    settings = grid()
    fit_scores = [(score(st, fit), st) for st in settings]
    best_fit, best = max(fit_scores, key=lambda x: (round(x[0], 4), x[1].kind == "rrf"))
    rankers = {name: round(score(st, held), 4) for name, st in FIXED.items()}
    rankers["fitted"] = round(score(best, held), 4)
    report = {
        "settings": asdict(best),
        "metric": f"nDCG@{k} over pseudo-queries (relevant: items whose catalog facts hold every value the query states)",
        "fit_score": round(best_fit, 4),
        "held_out_scores": rankers,
        "queries": len(queries),
        "held_out_queries": len(held),
        "grid_size": len(settings),
        "typo_share": round(sum(q.typo for q in queries) / len(queries), 3),
        "examples": [q.text for q in queries[:12]],
        "seconds": round(time.time() - t0, 2),
        "seconds_preparing_queries": round(t_prep, 2),
        "items": len(searcher.products),
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    log.info("fusion fitted in %.1fs over %d pseudo-queries: %s (held-out nDCG@%d %s)", report["seconds"], len(queries),
             report["settings"], k, rankers)
    return report


def save_report(report: dict, index_dir: str | Path) -> Path:
    from retrieval.artifacts import atomic_write_json

    return atomic_write_json(Path(index_dir) / FUSION_FILE, report, indent=1, ensure_ascii=False)


def load_settings(index_dir: str | Path) -> FusionSettings | None:
    """The fitted settings saved beside an index (None when fusion was never fitted there)."""
    import json

    path = Path(index_dir) / FUSION_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return FusionSettings(**data["settings"])
