"""The attribute vocabulary: which words name which catalog facts.

Two sources, one reader:
- a language pack (`retrieval/vocabulary_data/<lang>.yaml`): synonyms, word families, grammar words
  and which column names hold which kind of value - what no catalog says;
- the catalog itself (`Vocabulary.from_catalog`, run at index-build time and saved beside the
  index): the values of its own categorical columns, whatever the columns are called, split into
  parts when one string mixes kinds ("White,pine"), grouped into families by their head noun
  ("Rug, flatwoven" and "Rug, high pile" are rugs; "Table lamp" is a lamp), and words the catalog
  does not use linked to its values by the text tower's similarity ("sneakers" -> "Sports Shoes").

Query understanding (`retrieval.query.read_query`), the grounding checker and chat read text
through `Vocabulary.extract_terms` and items through `Vocabulary.item_values`, so "navy" means the
same dark blue when a shopper asks for it and when an explanation claims it. The module-level
functions use the default vocabulary (the pack alone) for callers that have no catalog at hand.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import yaml

from retrieval.catalog import Catalog, Product

log = logging.getLogger(__name__)

PACK_DIR = Path(__file__).with_name("vocabulary_data")
VOCAB_FILE = "vocabulary.json"
VECTORS_FILE = "vocabulary_vectors.npy"
TOKEN_RE = re.compile(r"[a-zà-ÿ0-9]+(?:['\-/][a-zà-ÿ0-9]+)*")
CLAUSE_RE = re.compile(r"[,.;:!?()]")
NULL_VALUES = frozenset({"", "unknown", "undefined", "other", "n/a", "na", "none", "nan", "null", "-"})
# columns whose values are not facts a shopper names (ids, free text, sources)
_SKIP_COLUMNS = frozenset({"id", "title", "name", "description", "desc", "size", "sizes", "price", "image", "images", "url",
                           "brand", "sku", "ean", "rooms", "image_group", "group_id", "year"})
_SPLIT_RE = re.compile(r"\s*(?:[,/&|+;]|\band\b)\s*")


@dataclass(frozen=True)
class Term:
    """One attribute value a text names: kind, value, the words, whether negated, and the token
    position. A term read by similarity (`similarity` set) may also mean the values in `also`."""

    kind: str
    value: str
    phrase: str
    negated: bool = False
    start: int = 0  # token position
    also: tuple[str, ...] = ()
    similarity: float | None = None


def tokens(text: str) -> list[str]:
    return TOKEN_RE.findall((text or "").lower())


def _plural(word: str) -> list[str]:
    return [word + "es"] if word.endswith(("s", "x", "ch", "sh")) else [word + "s"]


def _singular(word: str) -> str | None:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return None


def _norm_raw(raw: str) -> str:
    return " ".join(raw.strip().lower().split())


def _column_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _words_and_clauses(text: str) -> tuple[list[str], set[int]]:
    """The word tokens of `text` (as `tokens`) and the positions of words that open a new clause."""
    words: list[str] = []
    starts: set[int] = set()
    for m in re.finditer(TOKEN_RE.pattern + "|" + CLAUSE_RE.pattern, (text or "").lower()):
        if CLAUSE_RE.fullmatch(m.group()):
            starts.add(len(words))
        else:
            words.append(m.group())
    return words, starts


@lru_cache(maxsize=8)
def load_pack(name: str = "en") -> dict:
    """A language pack by name (`retrieval/vocabulary_data/<name>.yaml`) or path."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PACK_DIR / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"language pack {name!r} not found at {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for key in ("kinds", "synonyms", "families"):
        if key not in data:
            raise ValueError(f"language pack {path}: missing section {key!r}")
    return data


@dataclass
class CatalogPart:
    """What a catalog adds to the pack: its columns, values, families, links and how each raw value reads."""

    columns: dict[str, str] = field(default_factory=dict)  # column -> kind ("category" = the category path's leaf)
    extra_kinds: list[str] = field(default_factory=list)  # kinds named after columns the pack does not know
    values: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # kind -> new value -> phrases
    families: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # kind -> family -> members
    equivalents: dict[str, list[list[str]]] = field(default_factory=dict)  # phrase -> readings [kind, value]
    links: dict[str, dict[str, list[list]]] = field(default_factory=dict)  # kind -> pack value -> [[catalog value, sim]]
    readings: dict[str, dict[str, list[list[str]]]] = field(default_factory=dict)  # kind -> raw value -> [[kind, value]]
    present: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> value -> items holding it
    vector_names: list[list[str]] = field(default_factory=list)  # [kind, value] per row of the value vectors
    similarity_threshold: float = 0.65
    similarity_margin: float = 0.04
    pack: str = "en"


class Vocabulary:
    """A language pack, optionally extended with one catalog's own values (see module doc)."""

    EMBED_CACHE_MAX = 20_000

    def __init__(self, pack: dict | str = "en", part: CatalogPart | None = None, vectors: np.ndarray | None = None):
        pack_name = pack if isinstance(pack, str) else "custom"
        pack = load_pack(pack) if isinstance(pack, str) else pack
        self.pack = pack
        self.part = part
        self.base_kinds: tuple[str, ...] = tuple(pack["kinds"])
        self.kinds: tuple[str, ...] = self.base_kinds + tuple(part.extra_kinds if part else ())
        self.synonyms: dict[str, dict[str, list[str]]] = {k: {v: list(p) for v, p in vals.items()} for k, vals in pack["synonyms"].items()}
        self.families: dict[str, dict[str, list[str]]] = {k: {f: list(m) for f, m in (pack["families"].get(k) or {}).items()}
                                                          for k in self.base_kinds}
        for kind, fams in self.families.items():
            for fam in fams:
                self.synonyms.setdefault(kind, {}).setdefault(fam, [fam])
        self.aliases: dict[str, dict[str, str]] = {k: dict(v) for k, v in (pack.get("aliases") or {}).items()}
        self.compounds: dict[str, dict[str, str]] = pack.get("compounds") or {}
        self.negations = frozenset(pack.get("negations", []))
        self.negating_but_after = frozenset(pack.get("negating_but_after", []))
        self.fillers = frozenset(pack.get("negation_fillers", []))
        self.continuers = frozenset(pack.get("negation_continuers", []))
        self.stopwords = frozenset(pack.get("stopwords", []))
        self.part_nouns = frozenset(pack.get("part_nouns", []))
        self.modifier_part_nouns = frozenset(pack.get("modifier_part_nouns", []))
        self.split_kinds = frozenset(pack.get("split_kinds", []))
        self.weak_heads = frozenset(pack.get("weak_heads", []))
        self.column_kinds = {col: kind for kind, cols in (pack.get("columns") or {}).items() for col in cols}
        self.fallback_columns: dict[str, list[str]] = pack.get("fallback_columns") or {
            "colour": ["colour", "colour_master"], "product_type": ["product_type"], "pattern": ["pattern"],
            "department": ["index", "index_group", "department"], "material": ["material"], "fit": ["fit"]}
        self.pack_name = part.pack if part else pack_name
        self.vectors = vectors
        self.embed: Callable[[Sequence[str]], np.ndarray] | None = None  # text tower, for reading unknown words
        self._accepts: dict[tuple[str, str], frozenset[str]] = {}
        self._canon: dict[tuple[str, str], str | None] = {}
        self._embed_cache: dict[str, np.ndarray] = {}  # phrase -> text-tower vector (bounded by EMBED_CACHE_MAX)
        if part:
            for kind, vals in part.values.items():
                for value, phrases in vals.items():
                    self.synonyms.setdefault(kind, {}).setdefault(value, [])
                    self.synonyms[kind][value] = list(dict.fromkeys(self.synonyms[kind][value] + phrases))
            for kind, fams in part.families.items():
                for fam, members in fams.items():
                    have = self.families.setdefault(kind, {}).setdefault(fam, [])
                    have.extend(m for m in members if m not in have)
                    self.synonyms.setdefault(kind, {}).setdefault(fam, [fam])
        self._table, self._longest = self._phrase_table()
        self.base_synonyms_pt = frozenset(pack["synonyms"].get("product_type", {})) | frozenset(
            (pack.get("families") or {}).get("product_type", {}))
        self._first_words_multi = {(k[0],) for k in self._table if len(k) > 1}

    # ------------------------------------------------------------------ phrases
    def _phrase_table(self) -> tuple[dict[tuple[str, ...], list[tuple[str, str]]], int]:
        table: dict[tuple[str, ...], list[tuple[str, str]]] = {}

        def add(phrase: str, kind: str, value: str) -> None:
            key = tuple(tokens(phrase))
            if key and (kind, value) not in table.setdefault(key, []):
                table[key].append((kind, value))

        for kind, values in self.synonyms.items():
            for value, phrases in values.items():
                forms = set(phrases) | {value}
                if kind == "product_type":
                    forms |= {p for ph in list(forms) for p in _plural(ph)}
                for ph in forms:
                    add(ph, kind, value)
        for phrase, extra in self.compounds.items():
            for kind, value in extra.items():
                add(phrase, kind, value)
        if self.part:
            for phrase, readings in self.part.equivalents.items():
                table[tuple(tokens(phrase))] = [tuple(r) for r in readings]
        # where a phrase names a pack kind, a column-named kind ("department: Swimwear") does not add a reading
        base = set(self.base_kinds)
        for key, hits in table.items():
            if any(k in base for k, _ in hits) and any(k not in base for k, _ in hits):
                table[key] = [h for h in hits if h[0] in base]
        return table, max((len(k) for k in table), default=1)

    def phrases(self) -> dict[tuple[str, ...], list[tuple[str, str]]]:
        """Every phrase this vocabulary reads (as tokens) with its (kind, value) readings; for
        constrained decoding, which must know all the words that can state a value."""
        return {k: list(v) for k, v in self._table.items()}

    def reads(self, phrase: str) -> list[tuple[str, str]]:
        """The (kind, value) readings of a whole phrase ([] when it is not a known phrase)."""
        return list(self._table.get(tuple(tokens(phrase)), []))

    def extract_terms(self, text: str, kinds: Iterable[str] | None = None, similar: bool = False) -> list[Term]:
        """Attribute values named in `text`, longest phrase first, with negation marked.

        A negation ("not", "without", ...) covers the phrase right after it (filler words like "too",
        "any", "in" may sit between) and ends where that phrase ends, unless "or"/"nor" carries it on:
        "dress without sleeves in black" wants black; "not too tight black jeans" wants black and
        excludes tight. A product word right before a part noun is a modifier ("cap sleeves").
        With `similar` and a text tower (`embed`), words no phrase covers are matched to the
        catalog's product types by similarity (see `_similar_terms`)."""
        return self.read(text, kinds, similar)[0]

    def read(self, text: str, kinds: Iterable[str] | None = None, similar: bool = False) -> tuple[list[Term], list[str], list[str]]:
        """Terms, free words (wanted) and negated free words of `text` (see `extract_terms`)."""
        kinds = set(self.kinds if kinds is None else kinds)
        toks, clause_starts = _words_and_clauses(text)
        out: list[Term] = []
        free: list[tuple[int, str]] = []
        negated_words: list[str] = []
        neg: str | None = None  # None | "seek" (a negation waits for its phrase) | "free" (negating free words) | "after"
        i = 0
        while i < len(toks):
            w = toks[i]
            if i in clause_starts:
                neg = None
            if w in self.negations or (w == "but" and i > 0 and toks[i - 1] in self.negating_but_after):
                neg = "seek"
                i += 1
                continue
            if neg == "after":
                neg = "seek" if w in self.continuers else None
                if neg:
                    i += 1
                    continue
            if w in {"but", "and"}:
                neg = None
            hit_n, hits = 0, []
            for n in range(min(self._longest, len(toks) - i), 0, -1):
                found = self._table.get(tuple(toks[i: i + n]))
                if found:
                    hit_n, hits = n, found
                    break
            if hits and i + hit_n < len(toks) and (toks[i + hit_n] in self.modifier_part_nouns or self._modifies_next(hits, toks, i + hit_n)):
                hits = [h for h in hits if h[0] != "product_type"]  # "cap sleeves": a part, not a cap
                hit_n = hit_n if hits else 0  # ... and "cap" stays a free word
            hits = [h for h in hits if h[0] in kinds]
            if hits:
                negated = neg in ("seek", "free")
                phrase = " ".join(toks[i: i + hit_n])
                out.extend(Term(kind, value, phrase, negated, i) for kind, value in hits)
                neg = "after" if negated else None
                i += hit_n
                continue
            if hit_n:  # a phrase of kinds not asked for: consumed, not a free word; a negation still ends with it
                i += hit_n
                neg = "after" if neg in ("seek", "free") else None
                continue
            if neg == "seek" and w in self.fillers:
                i += 1
                continue
            content = w not in self.stopwords and not w.isdigit() and w not in {"but"}
            if neg in ("seek", "free") and content:
                negated_words.append(w)
                neg = "free"
            else:
                if neg == "free" or (neg == "seek" and not content):
                    neg = None
                if content:
                    free.append((i, w))
            i += 1
        out = self._compound_heads(out, toks)
        if similar and self.embed is not None and self.vectors is not None and self.part is not None:
            out = self._similar_terms(toks, out, free, kinds)
        used = {p for t in out if t.similarity is not None for p in range(t.start, t.start + len(t.phrase.split()))}
        return out, [w for p, w in free if p not in used], negated_words

    def _compound_heads(self, terms: list[Term], toks: list[str]) -> list[Term]:
        """Of adjacent product words only the last names the product ("glass vase" is a vase, "shirt
        dress" a dress); a weak last word ("set", "pair") leaves the product to the word before."""
        types = sorted({(t.start, len(t.phrase.split())) for t in terms if t.kind == "product_type"})
        drop: set[int] = set()
        for (s1, n1), (s2, n2) in zip(types, types[1:]):
            if s1 + n1 == s2:
                drop.add(s2 if " ".join(toks[s2: s2 + n2]) in self.weak_heads else s1)
        return [t for t in terms if not (t.kind == "product_type" and t.start in drop)]

    def _modifies_next(self, hits: list[tuple[str, str]], toks: list[str], nxt: int) -> bool:
        """A catalog product word right before an unknown noun modifies it ("kitchen spices" are not a
        kitchen): true when every product reading comes from the catalog and the next word is a
        content word no phrase starts with."""
        if self.part is None or not any(k == "product_type" for k, _ in hits):
            return False
        if any(k == "product_type" and v in self.base_synonyms_pt for k, v in hits):
            return False
        w = toks[nxt]
        return w not in self.stopwords and w not in self.negations and not w.isdigit() and (w,) not in self._table and \
            not any(key[0] == w for key in self._first_words_multi)

    # ------------------------------------------------------------------ similarity
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text-tower vectors of short phrases (cached; needs `embed`)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._embed_cache]
        if missing:
            if len(self._embed_cache) + len(missing) > self.EMBED_CACHE_MAX:
                self._embed_cache.clear()  # bounded memory in a long-running server; cleared before, never under, a read
            vecs = np.asarray(self.embed(missing), dtype=np.float32)
            for t, v in zip(missing, vecs):
                self._embed_cache[t] = v
        return np.stack([self._embed_cache[t] for t in texts])

    def nearest(self, phrase: str, kind: str = "product_type", within: frozenset[str] | None = None) -> list[tuple[str, float]]:
        """The catalog values of `kind` closest to `phrase` (cosine >= threshold and within the margin
        of the best), best first; [] when none is close enough or no vectors are loaded."""
        if self.vectors is None or self.embed is None or self.part is None or not len(self.vectors):
            return []
        rows = [j for j, (k, v) in enumerate(self.part.vector_names) if k == kind and (within is None or v in within)]
        if not rows:
            return []
        q = self.embed_texts([phrase])[0]
        sims = np.asarray(self.vectors[rows], dtype=np.float32) @ q
        best = float(sims.max())
        if best < self.part.similarity_threshold:
            return []
        order = np.argsort(-sims)
        out = [(self.part.vector_names[rows[j]][1], float(sims[j])) for j in order[:4] if sims[j] >= best - self.part.similarity_margin]
        return out

    def _similar_terms(self, toks: list[str], terms: list[Term], free: list[tuple[int, str]], kinds: set[str]) -> list[Term]:
        """Read the words no phrase covered by the text tower's similarity to the catalog's product
        types: "bedside lamp" -> Table lamp (a family term "lamp" inside the span is narrowed),
        "kitchen spices" -> Spice mill. Only where the query names no specific product type."""
        if "product_type" not in kinds:
            return terms
        free_pos = {p for p, _ in free}
        fam_terms = {t.start: t for t in terms if t.kind == "product_type" and not t.negated and self.families.get("product_type", {}).get(t.value)}
        specific = [t for t in terms if t.kind == "product_type" and not t.negated and t.start not in fam_terms]
        if specific:
            return terms
        spans: list[list[int]] = []
        cur: list[int] = []
        p = 0
        while p < len(toks):
            if p in free_pos:
                cur.append(p)
                p += 1
            elif p in fam_terms:
                n = len(fam_terms[p].phrase.split())
                cur.extend(range(p, p + n))
                p += n
            else:
                if cur:
                    spans.append(cur)
                cur = []
                p += 1
        if cur:
            spans.append(cur)
        out = list(terms)
        for span in spans:
            if not any(q in free_pos for q in span) or len(span) > 5:
                continue
            fams = [fam_terms[q] for q in span if q in fam_terms]
            within = None
            if fams:
                within = frozenset().union(*(self.accepts("product_type", t.value) for t in fams))
            near = self.nearest(" ".join(toks[q] for q in span), "product_type", within)
            if not near:
                continue
            for t in fams:
                out.remove(t)
            out.append(Term("product_type", near[0][0], " ".join(toks[q] for q in span), False, span[0],
                            tuple(v for v, _ in near[1:]), round(near[0][1], 3)))
        return sorted(out, key=lambda t: t.start)

    # ------------------------------------------------------------------ values
    def accepts(self, kind: str, value: str) -> frozenset[str]:
        """Item values of which a stated `value` is true: itself, a family's members, and the catalog
        values a word the catalog does not use was linked to."""
        key = (kind, value)
        if key not in self._accepts:
            out = {value}
            self._accepts[key] = frozenset(out)  # guards cycles
            for member in self.families.get(kind, {}).get(value, []):
                out |= self.accepts(kind, member)
            if self.part:
                for linked, _ in self.part.links.get(kind, {}).get(value, []):
                    out |= self.accepts(kind, linked)
            self._accepts[key] = frozenset(out)
        return self._accepts[key]

    def canonical(self, kind: str, raw: str) -> str | None:
        """A catalog attribute value as a pack value (None when it names nothing known)."""
        key = (kind, raw)
        if key not in self._canon:
            self._canon[key] = self._canonical(kind, raw)
        return self._canon[key]

    def _canonical(self, kind: str, raw: str) -> str | None:
        raw = raw.strip().lower()
        if raw in NULL_VALUES:
            return None
        alias = self.aliases.get(kind, {}).get(raw)
        if alias:
            return alias
        if raw in self.synonyms.get(kind, {}):
            return raw
        terms = [t for t in self.extract_terms(raw, (kind,)) if not t.negated]
        return terms[-1].value if terms else None

    def _exact(self, kind: str, raw: str) -> str | None:
        alias = self.aliases.get(kind, {}).get(raw)
        if alias:
            return alias
        for k, v in self._table.get(tuple(tokens(raw)), []):
            if k == kind:
                return v
        return None

    def item_values(self, p: Product, text: bool = True) -> dict[str, set[str]]:
        """The values an item's facts back, per kind. Structured attributes first (the catalog's own
        columns when this vocabulary was built from the catalog); with `text`, material, fit and
        pattern words are also read from the title and description. Search trusts the structured
        values more than the text-read ones."""
        facts = p.facts()
        out: dict[str, set[str]] = {k: set() for k in self.kinds}
        if self.part:
            for column, kind in self.part.columns.items():
                raw = (p.category[-1] if p.category else "") if column == "category" else facts.get(column, "")
                if not raw:
                    continue
                for k, v in self.part.readings.get(kind, {}).get(_norm_raw(raw), []):
                    out.setdefault(k, set()).add(v)
        else:
            for kind, keys in self.fallback_columns.items():
                for key in keys:
                    v = self.canonical(kind, facts.get(key, ""))
                    if v:
                        out[kind].add(v)
        if "department" in out and ("sport" in facts.get("index_group", "").lower() or "sport" in facts.get("section", "").lower()):
            out["department"].add("sport")
        denim = facts.get("garment_group", "").lower() == "trousers denim"
        if not text:
            if denim and "trousers" in out.get("product_type", ()):
                out["product_type"].add("jeans")
            return out
        body = f"{p.title}. {p.description}"
        text_terms = self.extract_terms(body, ("material", "fit", "pattern", "product_type"))
        toks = tokens(body)
        for t in text_terms:
            if t.negated:
                continue
            if t.kind == "fit" and self.names_a_part(t, toks):
                continue  # "wide sleeves", "regular waist": a detail's shape, not the garment's fit
            if t.kind in ("material", "fit") or (t.kind == "pattern" and t.value in ("lace", "embroidered", "sparkly", "mesh", "denim")):
                out[t.kind].add(t.value)
            if t.kind == "product_type" and not out["product_type"]:
                out["product_type"].add(t.value)
        if denim and "trousers" in out["product_type"]:
            out["product_type"].add("jeans")
        return out

    def names_a_part(self, t: Term, toks: list[str]) -> bool:
        nxt = t.start + len(t.phrase.split())
        return nxt < len(toks) and toks[nxt] in self.part_nouns

    def matches(self, term: Term, values: dict[str, set[str]]) -> bool | None:
        """Whether an item's values make a term true (None when the item says nothing of that kind)."""
        have = values.get(term.kind) or set()
        if not have:
            return None
        ok = set(self.accepts(term.kind, term.value))
        for v in term.also:
            ok |= self.accepts(term.kind, v)
        hit = bool(have & ok)
        return (not hit) if term.negated else hit

    # ------------------------------------------------------------------ catalog
    @classmethod
    def from_catalog(cls, catalog: Catalog, pack: str = "en", embed: Callable[[Sequence[str]], np.ndarray] | None = None,
                     max_share: float = 0.05, min_share_max: int = 60, similarity_threshold: float = 0.65) -> "Vocabulary":
        """The pack extended with `catalog`'s own categorical values (see module doc). `embed` (the
        text tower) embeds the product-type values once, for reading unknown words by similarity."""
        base = cls(pack)
        n = max(1, len(catalog))
        columns: dict[str, str] = {}
        distinct: dict[str, dict[str, int]] = {}
        for p in catalog.products:
            for key, value in p.attributes.items():
                if isinstance(value, str) and value.strip():
                    distinct.setdefault(key, {}).setdefault(value.strip(), 0)
                    distinct[key][value.strip()] += 1
        limit = max(min_share_max, min(500, int(max_share * n)))
        for key, vals in distinct.items():
            kind = base.column_kinds.get(_column_key(key))
            words = np.mean([len(v.split()) for v in vals]) if vals else 0
            if key.lower() in _SKIP_COLUMNS or len(vals) < 2:
                continue
            if kind is None and (len(vals) > limit or words > 4 or all(any(c.isdigit() for c in v) for v in vals)):
                continue  # free text or ids, not categories
            if kind is None:
                kind = re.sub(r"[^a-z0-9_]", "_", key.lower())
                kind = kind + "_column" if kind in base.base_kinds else kind  # H&M's "department" is not an audience
            columns[key] = kind
        if "product_type" not in columns.values() and any(p.category for p in catalog.products):
            columns["category"] = "product_type"
        part = CatalogPart(columns=columns, pack=pack, similarity_threshold=similarity_threshold,
                           extra_kinds=sorted({k for k in columns.values() if k not in base.base_kinds}))
        builder = _PartBuilder(base, part)
        for column, kind in columns.items():
            raws = {(p.category[-1] if p.category else "") for p in catalog.products} if column == "category" else set(distinct.get(column, {}))
            for raw in sorted(raws):
                builder.read_value(kind, raw)
        builder.head_families()
        vocab = cls(pack, part)
        for p in catalog.products:
            for kind, values in vocab.item_values(p, text=False).items():
                for v in values:
                    part.present.setdefault(kind, {}).setdefault(v, 0)
                    part.present[kind][v] += 1
        _equivalents(vocab, part, pack)
        vocab = cls(pack, part)
        if embed is not None:
            vocab.embed = embed
            vocab._embed_values()
        log.info("vocabulary from %d items: columns %s, %d new values, %d families, %d links", len(catalog), columns,
                 sum(len(v) for v in part.values.values()), sum(len(v) for v in part.families.values()),
                 sum(len(v) for v in part.links.values()))
        return vocab

    def _embed_values(self) -> None:
        """Embed the catalog's product-type values, and link pack words the catalog does not use to them."""
        part = self.part
        names = sorted((k, v) for k, vals in part.present.items() for v in vals if k == "product_type")
        if not names:
            return
        vectors = self.embed_texts([v for _, v in names])
        part.vector_names = [list(x) for x in names]
        self.vectors = vectors.astype(np.float16)
        links: dict[str, list[list]] = {}
        present = set(part.present.get("product_type", {}))
        for value in sorted(self.synonyms.get("product_type", {})):
            if self.accepts("product_type", value) & present:
                continue
            near = self.nearest(value, "product_type")
            if near:
                links[value] = [[v, round(s, 3)] for v, s in near]
        part.links["product_type"] = links
        self._accepts.clear()

    def to_dict(self) -> dict:
        if self.part is None:
            return {"pack": self.pack_name}
        return {"pack": self.pack_name, **{k: getattr(self.part, k) for k in CatalogPart.__dataclass_fields__ if k != "pack"}}

    def save(self, directory: str | Path) -> Path:
        """Write vocabulary.json (+ the value vectors) into `directory`, atomically."""
        from retrieval.artifacts import atomic_path, atomic_write_json

        directory = Path(directory)
        if self.vectors is not None:
            with atomic_path(directory / VECTORS_FILE) as tmp, open(tmp, "wb") as f:
                np.save(f, np.asarray(self.vectors, np.float16), allow_pickle=False)
        return atomic_write_json(directory / VOCAB_FILE, self.to_dict(), indent=1, ensure_ascii=False)

    @classmethod
    def load(cls, directory: str | Path) -> "Vocabulary":
        directory = Path(directory)
        path = directory / VOCAB_FILE
        if not path.exists():
            raise FileNotFoundError(f"no vocabulary at {directory}; run `whyrec index build`")
        data = json.loads(path.read_text(encoding="utf-8"))
        pack = data.pop("pack", "en")
        part = CatalogPart(pack=pack, **{k: v for k, v in data.items() if k in CatalogPart.__dataclass_fields__})
        vpath = directory / VECTORS_FILE
        vectors = np.load(vpath) if vpath.exists() else None
        return cls(pack, part, vectors)


class _PartBuilder:
    """Reads a catalog's raw values into `CatalogPart` (readings, new values and their phrases)."""

    def __init__(self, base: Vocabulary, part: CatalogPart):
        self.base = base
        self.part = part

    def new_value(self, kind: str, value: str) -> None:
        phrases = [value]
        if ", " in value:  # "rug, flatwoven" is also said "flatwoven rug"
            head, _, rest = value.partition(", ")
            phrases.append(f"{rest.strip()} {head.strip()}")
        if kind == "product_type":  # "Watches" is also said "watch"
            for ph in list(phrases):
                words = ph.split()
                sing = _singular(words[-1]) if words else None
                if sing:
                    phrases.append(" ".join(words[:-1] + [sing]))
        self.part.values.setdefault(kind, {}).setdefault(value, phrases)

    def read_value(self, kind: str, raw: str) -> list[list[str]]:
        raw_l = _norm_raw(raw)
        readings = self.part.readings.setdefault(kind, {})
        if raw_l in readings:
            return readings[raw_l]
        out: list[list[str]] = []
        if raw_l in NULL_VALUES:
            readings[raw_l] = out
            return out
        if kind not in self.base.base_kinds:  # a column the pack does not know: its values are the values
            for part in (x.strip() for x in raw_l.split("|")):
                if len(part) >= 3 and part not in NULL_VALUES and not part.isdigit() and part not in self.base.stopwords:
                    self.new_value(kind, part)
                    out.append([kind, part])
            readings[raw_l] = out
            return out
        whole = self.base._exact(kind, raw_l)
        if whole:
            out.append([kind, whole])
        else:
            parts = [x for x in _SPLIT_RE.split(raw_l) if x] if kind in self.base.split_kinds else [raw_l]
            if kind in self.base.split_kinds:  # "black-brown" is two colours, "high-gloss white" is not
                split = []
                for x in parts:
                    halves = x.split("-")
                    known = len(halves) > 1 and all(self.base._table.get(tuple(tokens(h))) for h in halves)
                    split.extend(halves if known else [x])
                parts = split
            if kind == "product_type" and "|" in raw_l:
                parts = [x.strip() for x in raw_l.split("|") if x.strip()]
            for part in parts:
                if part in NULL_VALUES:
                    continue
                v = self.base._exact(kind, part)
                if v:
                    out.append([kind, v])
                    continue
                other = [h for h in self.base._table.get(tuple(tokens(part)), []) if h[0] != kind]
                if other:
                    out.extend([k, v] for k, v in other)
                    continue
                terms = [t for t in self.base.extract_terms(part) if not t.negated]
                same = [t for t in terms if t.kind == kind]
                self.new_value(kind, part)
                out.append([kind, part])
                for t in same:
                    if t.value != part:
                        members = self.part.families.setdefault(kind, {}).setdefault(t.value, [])
                        if part not in members:
                            members.append(part)
                out.extend([t.kind, t.value] for t in terms if t.kind != kind and t.kind != "department" or
                           (t.kind == "department" and kind == "product_type"))
        dedup = []
        for r in out:
            if r not in dedup:
                dedup.append(r)
        readings[raw_l] = dedup
        return dedup

    def head_families(self) -> None:
        """Group new product-type values by their head noun: "table lamp" and "wall lamp" are lamps,
        "rug, flatwoven" is a rug, "bookcase with glass door" is a bookcase."""
        values = self.part.values.get("product_type", {})
        for value in list(values):
            head = value.partition(", ")[0]
            words = tokens(re.split(r"\b(?:with|for|of|and|in)\b", head)[0])
            if not words:
                continue
            noun = words[-1]
            if noun == value:
                continue
            phrase = " ".join(words)
            if len(words) > 1 and phrase != value:  # the multiword head is a family too, inside the noun's
                fam2 = self.base._exact("product_type", phrase) or phrase
                members = self.part.families.setdefault("product_type", {}).setdefault(fam2, [])
                if value not in members:
                    members.append(value)
                if fam2 not in self.base.synonyms.get("product_type", {}):
                    self.part.values.setdefault("product_type", {}).setdefault(fam2, [fam2])
                value = fam2
            forms = {noun}
            sing = _singular(noun)
            if sing:
                forms.add(sing)
            fam = self.base._exact("product_type", noun) or (sing and self.base._exact("product_type", sing)) or sing or noun
            members = self.part.families.setdefault("product_type", {}).setdefault(fam, [])
            if value not in members:
                members.append(value)
            if fam not in self.base.synonyms.get("product_type", {}):
                have = self.part.values.setdefault("product_type", {}).setdefault(fam, [fam])
                have.extend(f for f in forms if f not in have)


def _equivalents(vocab: Vocabulary, part: CatalogPart, pack: str) -> None:
    """Pack equivalents ("couch" = "sofa"): when the catalog holds items for one member's reading,
    the members whose own readings have no items read as it."""
    present = part.present
    for group in load_pack(pack).get("equivalents") or []:
        readings = {m: vocab.reads(m) for m in group}

        def has_items(rs):
            return any(v in present.get(k, {}) or vocab.accepts(k, v) & set(present.get(k, {})) for k, v in rs)

        anchor = next((m for m in group if readings[m] and has_items(readings[m])), None)
        if anchor is None:
            continue
        for m in group:
            if m != anchor and not has_items(readings[m]):
                part.equivalents[m] = [list(r) for r in readings[anchor]]


# ---------------------------------------------------------------------- the default vocabulary
DEFAULT = Vocabulary("en")

KINDS: tuple[str, ...] = DEFAULT.base_kinds
SYNONYMS: dict[str, dict[str, list[str]]] = DEFAULT.synonyms
FAMILIES: dict[str, dict[str, list[str]]] = DEFAULT.families
CATALOG_VALUE_ALIASES: dict[str, dict[str, str]] = DEFAULT.aliases
NEGATIONS = DEFAULT.negations
FIT_PART_NOUNS = DEFAULT.part_nouns


def extract_terms(text: str, kinds: tuple[str, ...] = KINDS) -> list[Term]:
    """Attribute values named in `text`, read with the default vocabulary (see `Vocabulary.extract_terms`)."""
    return DEFAULT.extract_terms(text, kinds)


def canonical(kind: str, raw: str) -> str | None:
    return DEFAULT.canonical(kind, raw)


def accepts(kind: str, value: str) -> frozenset[str]:
    return DEFAULT.accepts(kind, value)


def item_values(p: Product, text: bool = True) -> dict[str, set[str]]:
    return DEFAULT.item_values(p, text)


def matches(term: Term, values: dict[str, set[str]]) -> bool | None:
    return DEFAULT.matches(term, values)


def _names_a_part(t: Term, toks: list[str]) -> bool:
    return DEFAULT.names_a_part(t, toks)
