"""Explanation metrics: BLEU, ROUGE, unique-sentence ratio, feature match / coverage / diversity,
and grounding precision / hallucination rate through a grounding checker.

BLEU and ROUGE are written out here (no extra dependency, and short enough to check by hand):
- BLEU-n: corpus BLEU (Papineni et al. 2002), clipped n-gram precisions for orders 1..n with uniform
  weights, geometric mean, brevity penalty exp(1 - r/c) when the hypotheses are shorter than the
  references (closest reference length per hypothesis). No smoothing: a corpus with no matching
  4-gram has BLEU-4 0. Per-record statistics are kept so that the corpus score can be bootstrapped.
- ROUGE-1/2: n-gram overlap F1 per pair; ROUGE-L: longest-common-subsequence F1 (beta 1). With several
  references the best one counts. Averaged over records.
Features are the attribute terms of `retrieval.vocabulary` (kind, value), never negated ones:
- feature match ratio (FMR): share of explanations that name at least one of the record's
  ground-truth features (the record's `features`, else those named by its reference);
- feature coverage ratio (FCR): distinct features named by all explanations / distinct features the
  evaluated items have (`item_values`);
- feature diversity (DIV, after PETER, Li et al. 2021): mean number of features two explanations
  share, over pairs (lower = more diverse); plus distinct-1/2 (unique n-grams / all n-grams).
"""
from __future__ import annotations

import inspect
import math
import re
from collections import Counter
from typing import Callable, Iterable, Sequence

import numpy as np

WORD_RE = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")
SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def ngrams(toks: Sequence[str], n: int) -> Counter:
    return Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))


# ----------------------------------------------------------------------------- BLEU
def bleu_stats(hyp: str, refs: Sequence[str], max_n: int = 4) -> np.ndarray:
    """[matches_1..n, totals_1..n, hyp_len, closest_ref_len] of one pair (summed over a corpus)."""
    h = words(hyp)
    rs = [words(r) for r in refs]
    if not rs:
        raise ValueError("BLEU needs at least one reference per hypothesis")
    out = np.zeros(2 * max_n + 2)
    for n in range(1, max_n + 1):
        hc = ngrams(h, n)
        best: Counter = Counter()
        for r in rs:
            best |= ngrams(r, n)  # max count of each n-gram over references
        out[n - 1] = sum(min(c, best[g]) for g, c in hc.items())
        out[max_n + n - 1] = max(len(h) - n + 1, 0)
    out[2 * max_n] = len(h)
    out[2 * max_n + 1] = min((len(r) for r in rs), key=lambda L: (abs(L - len(h)), L))
    return out


def bleu_from_stats(stats: np.ndarray, n: int, max_n: int = 4) -> float:
    """Corpus BLEU-n from summed `bleu_stats` (n <= max_n)."""
    matches, totals = stats[:n], stats[max_n : max_n + n]
    if (totals == 0).any() or (matches == 0).any():
        return 0.0
    log_p = float(np.mean(np.log(matches / totals)))
    c, r = stats[2 * max_n], stats[2 * max_n + 1]
    bp = 1.0 if c > r else math.exp(1 - r / c) if c > 0 else 0.0
    return bp * math.exp(log_p)


def corpus_bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4) -> float:
    if len(hyps) != len(refs):
        raise ValueError("one reference list per hypothesis")
    return bleu_from_stats(sum(bleu_stats(h, r, max(n, 4)) for h, r in zip(hyps, refs)), n, max(n, 4))


# ----------------------------------------------------------------------------- ROUGE
def _prf(overlap: float, n_hyp: int, n_ref: int) -> dict[str, float]:
    p = overlap / n_hyp if n_hyp else 0.0
    r = overlap / n_ref if n_ref else 0.0
    return {"p": p, "r": r, "f": 2 * p * r / (p + r) if p + r else 0.0}


def rouge_n(hyp: str, ref: str, n: int) -> dict[str, float]:
    h, r = ngrams(words(hyp), n), ngrams(words(ref), n)
    return _prf(sum((h & r).values()), sum(h.values()), sum(r.values()))


def lcs_length(a: Sequence, b: Sequence) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(hyp: str, ref: str) -> dict[str, float]:
    h, r = words(hyp), words(ref)
    return _prf(lcs_length(h, r), len(h), len(r))


def rouge_scores(hyp: str, refs: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L F1 against the best of several references."""
    out = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for ref in refs:
        out["rouge1"] = max(out["rouge1"], rouge_n(hyp, ref, 1)["f"])
        out["rouge2"] = max(out["rouge2"], rouge_n(hyp, ref, 2)["f"])
        out["rougeL"] = max(out["rougeL"], rouge_l(hyp, ref)["f"])
    return out


# ----------------------------------------------------------------------------- diversity
def sentences(text: str) -> list[str]:
    return [s for s in (" ".join(words(x)) for x in SENTENCE_RE.split(text.strip())) if s]


def unique_sentence_ratio(texts: Iterable[str]) -> float:
    """Distinct sentences / all sentences over the generated explanations (templates score low)."""
    all_s = [s for t in texts for s in sentences(t)]
    return len(set(all_s)) / len(all_s) if all_s else 0.0


def distinct_n(texts: Iterable[str], n: int) -> float:
    grams = [g for t in texts for g in ngrams(words(t), n).elements()]
    return len(set(grams)) / len(grams) if grams else 0.0


# ----------------------------------------------------------------------------- features
Feature = tuple[str, str]


def features(text: str) -> set[Feature]:
    """The (kind, value) attribute features a text names (negated mentions are not features)."""
    from retrieval.vocabulary import extract_terms

    return {(t.kind, t.value) for t in extract_terms(text) if not t.negated}


def feature_match_ratio(generated: Sequence[set[Feature]], truth: Sequence[set[Feature]]) -> float:
    """Share of explanations naming at least one of their ground-truth features (records without any skipped)."""
    pairs = [(g, t) for g, t in zip(generated, truth) if t]
    return sum(bool(g & t) for g, t in pairs) / len(pairs) if pairs else float("nan")


def feature_coverage_ratio(generated: Sequence[set[Feature]], available: set[Feature]) -> float:
    """Distinct features named by the explanations / the features that could be named."""
    if not available:
        return float("nan")
    named = set().union(*generated) if generated else set()
    return len(named & available) / len(available)


def feature_diversity(generated: Sequence[set[Feature]], max_pairs: int = 200_000, seed: int = 0) -> float:
    """Mean size of the feature overlap of two different explanations (lower = more diverse)."""
    n = len(generated)
    if n < 2:
        return float("nan")
    total_pairs = n * (n - 1) // 2
    if total_pairs <= max_pairs:
        pairs = ((i, j) for i in range(n) for j in range(i + 1, n))
    else:
        rng = np.random.default_rng(seed)
        a, b = rng.integers(0, n, max_pairs), rng.integers(0, n - 1, max_pairs)
        pairs = zip(a, np.where(b >= a, b + 1, b))
    overlaps = [len(generated[i] & generated[j]) for i, j in pairs]
    return float(np.mean(overlaps))


# ----------------------------------------------------------------------------- grounding
def _takes_request(check: Callable) -> bool:
    try:
        return "request" in inspect.signature(check).parameters
    except (TypeError, ValueError):
        return False


def grounding_scores(check: Callable, text: str, product, request: str | None = None) -> dict[str, float]:
    """Per-explanation grounding via a checker with the `synth_data.grounding.check` contract. The
    request goes along when the checker takes it (words quoted from the request are not claims)."""
    res = check(text, product, request=request) if request and _takes_request(check) else check(text, product)
    n_sup, n_con, n_not = len(res.supported), len(res.contradicted), len(res.not_stated)
    return {"grounding_precision": float(res.precision), "hallucinated": float(not res.ok),
            "claims": float(n_sup + n_con), "contradicted": float(n_con), "not_stated": float(n_not)}
