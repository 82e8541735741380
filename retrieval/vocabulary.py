"""The attribute vocabulary: which words name which catalog facts, in one place.

Query understanding (retrieval.query) and the grounding checker (synth_data.grounding) both read
text through `extract_terms`, and both read an item through `item_values`, so "navy" means the
same dark blue when a shopper asks for it and when an explanation claims it.

A value may stand for a family ("blue" covers dark and light blue, "shoes" covers sneakers):
`accepts(kind, value)` is the set of item values a stated value is true of.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from retrieval.catalog import Product

KINDS = ("colour", "product_type", "pattern", "material", "department", "fit")

# canonical value -> surface phrases (lower case; plurals of product types are added below)
SYNONYMS: dict[str, dict[str, list[str]]] = {
    "colour": {
        "black": ["black", "jet black", "ebony"],
        "white": ["white", "optical white", "snow white"],
        "off white": ["off white", "off-white", "cream", "ivory", "ecru", "creamy"],
        "grey": ["grey", "gray"],
        "light grey": ["light grey", "light gray", "pale grey", "silver grey"],
        "dark grey": ["dark grey", "dark gray", "charcoal", "anthracite", "graphite"],
        "blue": ["blue", "royal blue", "cobalt"],
        "dark blue": ["dark blue", "navy", "navy blue", "midnight blue", "indigo"],
        "light blue": ["light blue", "sky blue", "baby blue", "pale blue", "powder blue"],
        "red": ["red", "scarlet", "cherry red"],
        "dark red": ["dark red", "burgundy", "wine red", "maroon", "bordeaux", "oxblood"],
        "pink": ["pink", "hot pink", "fuchsia", "magenta"],
        "light pink": ["light pink", "pale pink", "powder pink", "blush", "baby pink", "dusty pink"],
        "green": ["green", "emerald", "bright green"],
        "dark green": ["dark green", "forest green", "bottle green", "olive green"],
        "light green": ["light green", "mint", "mint green", "sage", "pale green"],
        "khaki": ["khaki", "khaki green", "olive", "greenish khaki"],
        "yellow": ["yellow", "mustard", "lemon"],
        "orange": ["orange", "rust", "terracotta", "coral"],
        "brown": ["brown", "chocolate", "tan", "camel", "cognac", "yellowish brown"],
        "beige": ["beige", "sand", "nude", "stone", "taupe", "greyish beige", "mole"],
        "purple": ["purple", "lilac", "lavender", "violet", "mauve", "plum"],
        "turquoise": ["turquoise", "teal", "aqua"],
        "gold": ["gold", "golden"],
        "silver": ["silver", "metallic silver"],
    },
    "product_type": {
        "dress": ["dress", "frock"],
        "trousers": ["trousers", "pants", "slacks", "chinos", "joggers", "cargo trousers"],
        "jeans": ["jeans", "denim jeans"],
        "sweater": ["sweater", "jumper", "pullover", "knit sweater", "sweatshirt", "crewneck"],
        "t-shirt": ["t-shirt", "tshirt", "t shirt", "tee", "tees"],
        "blouse": ["blouse"],
        "top": ["top", "crop top"],
        "vest top": ["vest top", "tank top", "tank", "camisole", "cami", "strap top", "singlet"],
        "bra": ["bra", "bralette", "push-up bra"],
        "shorts": ["shorts"],
        "skirt": ["skirt", "miniskirt", "maxi skirt"],
        "underwear bottom": ["briefs", "knickers", "panties", "thong", "hipster briefs", "boxer shorts", "boxers", "underwear bottom"],
        "shirt": ["shirt", "button-down", "oxford shirt", "flannel shirt"],
        "swimwear bottom": ["bikini bottoms", "bikini bottom", "swim shorts", "swimming trunks", "swimwear bottom"],
        "bikini top": ["bikini top", "bikini"],
        "swimsuit": ["swimsuit", "swimming costume", "bathing suit", "one-piece"],
        "jacket": ["jacket", "bomber", "parka", "windbreaker", "puffer jacket"],
        "coat": ["coat", "trench coat", "overcoat", "raincoat"],
        "blazer": ["blazer", "suit jacket"],
        "hoodie": ["hoodie", "hooded sweatshirt", "hoody"],
        "leggings/tights": ["leggings", "tights"],
        "cardigan": ["cardigan"],
        "socks": ["socks", "sock", "ankle socks"],
        "bag": ["bag", "handbag", "shoulder bag", "tote", "tote bag", "backpack", "clutch"],
        "earring": ["earring", "earrings", "studs", "hoops"],
        "necklace": ["necklace", "pendant", "chain necklace"],
        "jumpsuit/playsuit": ["jumpsuit", "playsuit", "romper", "overall"],
        "pyjama set": ["pyjamas", "pajamas", "pyjama set", "pajama set", "pjs"],
        "scarf": ["scarf", "shawl"],
        "boots": ["boots", "boot", "ankle boots", "chelsea boots", "bootie", "booties"],
        "sneakers": ["sneakers", "trainers", "sneaker", "trainer", "running shoes"],
        "sandals": ["sandals", "sandal", "heeled sandals", "slides"],
        "heels": ["heels", "high heels", "pumps", "court shoes", "stilettos"],
        "flat shoe": ["flats", "flat shoes", "ballerinas", "ballet flats", "loafers"],
        "belt": ["belt"],
        "sunglasses": ["sunglasses", "shades"],
        "hat": ["hat", "beanie", "cap", "baseball cap", "bucket hat", "sun hat"],
        "bodysuit": ["bodysuit", "body"],
        "gloves": ["gloves", "mittens"],
        "polo shirt": ["polo shirt", "polo"],
        "robe": ["robe", "dressing gown", "bathrobe", "kimono"],
        "hair accessory": ["hair clip", "hairband", "alice band", "scrunchie", "hair tie", "headband"],
        "ring": ["ring"],
    },
    "pattern": {
        "solid": ["solid", "plain", "solid-colour", "single-colour"],
        "striped": ["striped", "stripes", "stripe", "pinstripe", "pinstriped", "breton"],
        "checked": ["checked", "check", "plaid", "tartan", "gingham", "houndstooth"],
        "dotted": ["polka dot", "polka dots", "polka-dot", "dotted", "spotted", "dots", "spots"],
        "lace": ["lace", "lacy", "lace-trimmed"],
        "printed": ["printed", "print", "prints", "patterned"],
        "all-over print": ["all-over print", "all over print", "floral", "flowers", "flowery", "leopard print", "animal print",
                           "paisley", "camouflage", "camo"],
        "graphic print": ["graphic", "logo", "slogan", "front print", "placement print", "printed motif", "motif"],
        "denim": ["denim"],
        "melange": ["melange", "marl", "heather", "marled"],
        "embroidered": ["embroidered", "embroidery", "broderie anglaise"],
        "sparkly": ["sparkly", "glitter", "glittery", "shimmering", "shiny", "metallic", "sequin", "sequins", "sequined", "sparkling"],
        "colour block": ["colour block", "colour-block", "color block", "colourblock"],
        "jacquard": ["jacquard", "jacquard-knit"],
        "mesh": ["mesh", "sheer", "see-through", "transparent"],
    },
    "material": {
        "cotton": ["cotton", "organic cotton"],
        "denim": ["denim"],
        "wool": ["wool", "merino", "cashmere", "wool-blend", "wool blend"],
        "linen": ["linen"],
        "silk": ["silk"],
        "satin": ["satin"],
        "leather": ["leather"],
        "faux leather": ["faux leather", "imitation leather", "vegan leather", "pu leather"],
        "suede": ["suede", "imitation suede", "faux suede"],
        "viscose": ["viscose", "rayon", "lyocell", "modal"],
        "polyester": ["polyester", "recycled polyester"],
        "jersey": ["jersey"],
        "knit": ["knitted", "knit", "rib-knit", "fine-knit", "chunky-knit", "ribbed"],
        "chiffon": ["chiffon"],
        "velvet": ["velvet", "velour"],
        "corduroy": ["corduroy", "cord"],
        "fleece": ["fleece"],
        "twill": ["twill"],
        "crepe": ["crêpe", "crepe"],
        "mesh": ["mesh"],
        "lace": ["lace"],
    },
    "department": {
        "women": ["women", "womens", "women's", "ladies", "ladieswear", "for her", "woman"],
        "men": ["men", "mens", "men's", "menswear", "for him", "man", "guys"],
        "kids": ["kids", "kid", "children", "childrens", "children's", "girls", "boys", "girl", "boy", "girl's", "boy's", "child",
                 "little girl", "little boy", "little girls", "little boys"],
        "baby": ["baby", "babies", "infant", "newborn", "toddler"],
        "sport": ["sport", "sports", "gym", "workout", "training", "running", "yoga", "athletic", "activewear", "fitness"],
        "teen": ["divided", "teen", "teens"],
    },
    "fit": {
        "slim": ["slim", "slim fit", "slim-fit", "skinny", "fitted", "tight", "tight-fitting", "figure-hugging", "bodycon"],
        "regular": ["regular fit", "regular-fit", "straight", "straight-leg", "regular"],
        "loose": ["loose", "loose-fitting", "loose fit", "relaxed", "relaxed fit", "oversized", "baggy", "wide", "wide-leg", "flared", "boxy"],
        "high waist": ["high waist", "high-waisted", "high waisted", "high-rise"],
    },
}

# a family value accepts its members (a stated "blue" is true of a dark blue item)
FAMILIES: dict[str, dict[str, list[str]]] = {
    "colour": {
        "blue": ["dark blue", "light blue"],
        "grey": ["light grey", "dark grey"],
        "red": ["dark red"],
        "pink": ["light pink"],
        "green": ["dark green", "light green", "khaki"],
        "white": ["off white"],
    },
    "product_type": {
        "top": ["vest top", "t-shirt", "blouse", "bodysuit", "polo shirt", "shirt"],
        "trousers": ["jeans"],
        "shoes": ["sneakers", "boots", "sandals", "heels", "flat shoe"],
        "swimwear": ["swimsuit", "bikini top", "swimwear bottom"],
        "jewellery": ["earring", "necklace", "ring"],
    },
    "pattern": {"printed": ["all-over print", "graphic print", "dotted", "striped", "checked"]},
    "material": {"knit": ["wool"], "leather": ["faux leather"]},
    "department": {"women": ["teen"], "kids": ["baby"]},
    "fit": {},
}
for _kind, _fams in FAMILIES.items():
    for _fam in _fams:
        SYNONYMS[_kind].setdefault(_fam, [_fam])
SYNONYMS["product_type"]["shoes"] += ["shoe", "footwear"]
SYNONYMS["product_type"]["swimwear"] += ["swimwear", "beachwear"]
SYNONYMS["product_type"]["jewellery"] += ["jewelry", "jewellery"]

# how H&M (and similar) attribute values map onto the vocabulary when they are not phrases of it
CATALOG_VALUE_ALIASES = {
    "colour": {"greenish khaki": "khaki", "yellowish brown": "brown", "dark beige": "beige", "light beige": "beige",
               "greyish beige": "beige", "light purple": "purple", "dark purple": "purple", "lilac purple": "purple",
               "dark pink": "pink", "other pink": "pink", "light red": "red", "other red": "red", "dark orange": "orange",
               "light orange": "orange", "other orange": "orange", "dark yellow": "yellow", "light yellow": "yellow",
               "other yellow": "yellow", "dark turquoise": "turquoise", "light turquoise": "turquoise", "other turquoise": "turquoise",
               "other blue": "blue", "other green": "green", "other purple": "purple", "khaki green": "khaki",
               "bronze/copper": "gold", "mole": "beige", "yellowish green": "light green"},
    "pattern": {"stripe": "striped", "check": "checked", "dot": "dotted", "all over pattern": "all-over print", "placement print": "graphic print",
                "front print": "graphic print", "glittering/metallic": "sparkly", "metallic": "sparkly", "sequin": "sparkly",
                "embroidery": "embroidered", "colour blocking": "colour block", "transparent": "mesh", "chambray": "denim"},
    "department": {"ladieswear": "women", "menswear": "men", "baby/children": "kids", "divided": "teen", "sport": "sport"},
    "product_type": {"leggings/tights": "leggings/tights", "underwear tights": "leggings/tights", "heeled sandals": "sandals",
                     "flat shoe": "flat shoe", "flat shoes": "flat shoe", "ballerinas": "flat shoe", "pumps": "heels", "wedge": "heels",
                     "bootie": "boots", "flip flop": "sandals", "slippers": "flat shoe", "other shoe": "shoes",
                     "hat/beanie": "hat", "hat/brim": "hat", "cap/peaked": "hat", "beanie": "hat", "felt hat": "hat", "bucket hat": "hat",
                     "straw hat": "hat", "cap": "hat", "earrings": "earring", "hair/alice band": "hair accessory", "hair clip": "hair accessory",
                     "hair string": "hair accessory", "hair ties": "hair accessory", "hairband": "hair accessory", "tote bag": "bag",
                     "backpack": "bag", "shoulder bag": "bag", "weekend/gym bag": "bag", "swimwear set": "swimwear",
                     "pyjama jumpsuit/playsuit": "pyjama set", "pyjama bottom": "pyjama set", "outdoor waistcoat": "jacket",
                     "underwear body": "bodysuit", "kids underwear top": "vest top", "sweater": "sweater"},
}

NEGATIONS = {"not", "no", "without", "non", "never", "isn't", "aren't", "doesn't", "don't", "nothing"}
TOKEN_RE = re.compile(r"[a-zà-ÿ0-9]+(?:['\-/][a-zà-ÿ0-9]+)*")


@dataclass(frozen=True)
class Term:
    """One attribute value a text names: kind, canonical value, the words, and whether negated."""

    kind: str
    value: str
    phrase: str
    negated: bool = False
    start: int = 0  # token position


def _plural(word: str) -> list[str]:
    return [word + "es"] if word.endswith(("s", "x", "ch", "sh")) else [word + "s"]


@lru_cache(maxsize=1)
def _phrase_table() -> tuple[dict[tuple[str, ...], list[tuple[str, str]]], int]:
    table: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for kind, values in SYNONYMS.items():
        for value, phrases in values.items():
            forms = set(phrases) | {value}
            if kind == "product_type":
                forms |= {p for ph in list(forms) for p in _plural(ph)}
            for ph in forms:
                key = tuple(TOKEN_RE.findall(ph.lower()))
                if key and (kind, value) not in table.setdefault(key, []):
                    table[key].append((kind, value))
    # "jeans" also states a denim pattern and material
    table[("jeans",)] += [("pattern", "denim"), ("material", "denim")]
    return table, max(len(k) for k in table)


def tokens(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


CLAUSE_RE = re.compile(r"[,.;:!?()]")


def _words_and_clauses(text: str) -> tuple[list[str], set[int]]:
    """The word tokens of `text` (as `tokens`) and the positions of words that open a new clause."""
    words: list[str] = []
    starts: set[int] = set()
    for m in re.finditer(TOKEN_RE.pattern + "|" + CLAUSE_RE.pattern, text.lower()):
        if CLAUSE_RE.fullmatch(m.group()):
            starts.add(len(words))
        else:
            words.append(m.group())
    return words, starts


def extract_terms(text: str, kinds: tuple[str, ...] = KINDS) -> list[Term]:
    """Attribute values named in `text`, longest phrase first, with negation ("not black",
    "without lace", "not too tight") marked."""
    table, longest = _phrase_table()
    toks, clause_starts = _words_and_clauses(text)
    out: list[Term] = []
    i = 0
    neg_until = -1
    while i < len(toks):
        if i in clause_starts:
            neg_until = -1  # "not too tight, black": the comma ends the negation
        if toks[i] in NEGATIONS:
            neg_until = i + 3  # "not too tight", "without any lace"
            i += 1
            continue
        if toks[i] in {"but", "and"}:
            neg_until = -1
        for n in range(min(longest, len(toks) - i), 0, -1):
            hits = table.get(tuple(toks[i : i + n]))
            if hits:
                for kind, value in hits:
                    if kind in kinds:
                        out.append(Term(kind, value, " ".join(toks[i : i + n]), i <= neg_until, i))
                i += n
                break
        else:
            i += 1
    return out


def canonical(kind: str, raw: str) -> str | None:
    """A catalog attribute value as a vocabulary value (None when it names nothing known)."""
    raw = raw.strip().lower()
    if not raw or raw in {"unknown", "undefined", "other", "n/a"}:
        return None
    alias = CATALOG_VALUE_ALIASES.get(kind, {}).get(raw)
    if alias:
        return alias
    if raw in SYNONYMS.get(kind, {}):
        return raw
    terms = [t for t in extract_terms(raw, (kind,)) if not t.negated]
    return terms[-1].value if terms else None


@lru_cache(maxsize=None)
def accepts(kind: str, value: str) -> frozenset[str]:
    """Item values of which a stated `value` is true: itself and, for a family, its members."""
    out = {value}
    for member in FAMILIES.get(kind, {}).get(value, []):
        out |= accepts(kind, member)
    return frozenset(out)


# Nouns for a garment's parts: a fit word right before one describes the part ("wide shoulder
# straps", "regular waist", "straight hem"), not how the garment fits.
FIT_PART_NOUNS = frozenset({
    "sleeves", "sleeve", "sides", "ribbing", "lace", "elastication", "elasticated", "elastic", "shoulder", "shoulders",
    "waistband", "waist", "flounce", "flounces", "buttoned", "neckline", "hem", "straps", "strap", "trim", "cuffs",
    "cuff", "collar", "band", "hood", "opening", "armholes", "pleats", "frill", "frills", "ruffle", "ruffles", "panel",
    "panels", "drawstring", "tie", "ties", "belt", "brim", "lapels", "rib", "ribbed", "smocking", "yoke", "gusset",
})


def _names_a_part(t: Term, toks: list[str]) -> bool:
    nxt = t.start + len(t.phrase.split())
    return nxt < len(toks) and toks[nxt] in FIT_PART_NOUNS


def item_values(p: Product, text: bool = True) -> dict[str, set[str]]:
    """The vocabulary values an item's facts back, per kind. Structured attributes first; with
    `text`, material, fit and pattern words are also read from the title and description (H&M has
    no material field). Search trusts the structured values more than the text-read ones."""
    facts = p.facts()
    out: dict[str, set[str]] = {k: set() for k in KINDS}
    for kind, keys in (("colour", ("colour", "colour_master")), ("product_type", ("product_type",)), ("pattern", ("pattern",)),
                       ("department", ("index", "index_group", "department")), ("material", ("material",)), ("fit", ("fit",))):
        for key in keys:
            v = canonical(kind, facts.get(key, ""))
            if v:
                out[kind].add(v)
    if "sport" in facts.get("index_group", "").lower() or "sport" in facts.get("section", "").lower():
        out["department"].add("sport")
    if not text:
        if facts.get("garment_group", "").lower() == "trousers denim" and "trousers" in out["product_type"]:
            out["product_type"].add("jeans")
        return out
    body = f"{p.title}. {p.description}"
    text_terms = extract_terms(body, ("material", "fit", "pattern", "product_type"))
    toks = tokens(body)
    for t in text_terms:
        if t.negated:
            continue
        if t.kind == "fit" and _names_a_part(t, toks):
            continue  # "wide sleeves", "regular waist": a detail's shape, not the garment's fit
        if t.kind in ("material", "fit") or (t.kind == "pattern" and t.value in ("lace", "embroidered", "sparkly", "mesh", "denim")):
            out[t.kind].add(t.value)
        if t.kind == "product_type" and not out["product_type"]:
            out["product_type"].add(t.value)
    if facts.get("garment_group", "").lower() == "trousers denim" and "trousers" in out["product_type"]:
        out["product_type"].add("jeans")
    return out


def matches(term: Term, values: dict[str, set[str]]) -> bool | None:
    """Whether an item's values make a term true (None when the item says nothing of that kind)."""
    have = values.get(term.kind) or set()
    if not have:
        return None
    hit = bool(have & accepts(term.kind, term.value))
    return (not hit) if term.negated else hit
