"""The planning benchmark's data: a synthetic corpus with known attributes, oracle primitives, instructions.

Paper section 3.4 / Table 1 score planners on Basic, Query-based, Multi-entity and Miscellaneous
(multi-step) tasks. Here a plan is scored *by execution*: it runs on a small corpus whose documents
carry known attributes, with **oracle** ``get_label``/``get_span`` that answer each sub-task from those
attributes, and its output table is compared with the instruction's expected table. Any correct plan
counts, not one canonical text.

* Two domains, :data:`PACKAGES` (Debian-like package descriptions: game, genre, multiplayer, library,
  programming languages, license, maintainer, installed size) and :data:`REVIEWS` (product reviews:
  product, brand, category, price, sentiment, a shipping complaint, reviewer and occupation), 32 records
  each, generated deterministically; every value is written verbatim in the document's text.
* :class:`Oracle`: the questions a plan asks are matched against keyword rules (regular expressions,
  no embeddings), so paraphrases are understood ("Is this package a game?", "Does this describe a video
  game?"); a label question may combine rules ("a multiplayer strategy game" = AND, "a game or a
  library" = OR, "not" negates one rule), and may hold a number ("Is the price above $50?"). The
  primitives also accept *derived* texts, i.e. values an earlier step extracted: a person's name, a
  language, a price or a size (e.g. ``get_label(names, "Is this person a teacher?")``). A question that
  no rule matches answers all-False / no spans and is recorded in :attr:`Oracle.unknown`.
* :data:`CASES`: 42 instructions, 10-11 per category, each with its output fields, a gold function
  (record -> expected item) and a reference plan (a correct plan, checked by the tests to score 1.0).

The few-shot examples of the planner prompt (TED talks, text messages) share no domain with these.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Callable

from falconer_assets.spans import Span

__all__ = ["CATEGORIES", "Case", "CASES", "QUICK_CASES", "PACKAGES", "REVIEWS", "Oracle", "corpus", "case_by_id"]

#: The paper's Table 1 categories, in its order ("Miscellaneous" = multi-step tasks).
CATEGORIES = ("basic", "query", "multi_entity", "multi_step")

# --------------------------------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------------------------------

_COMPILED = {"Rust": True, "Haskell": True, "OCaml": True, "Python": False, "Perl": False}
_MAINTAINERS = {  # name -> is a Debian Developer
    "Ana Silva": True, "Bruno Keller": False, "Chen Wei": True, "Dana Novak": False,
    "Emil Lindqvist": True, "Farah Haddad": False, "Goran Petrov": True, "Hana Sato": False,
}
_GENRES = ("strategy", "puzzle", "racing", "arcade")
_LICENSES = ("GPL-3", "MIT", "BSD-2")
_PKG_WORDS = ("star", "moon", "river", "stone", "cloud", "ember", "frost", "delta", "quill", "orbit",
              "pixel", "maple", "cobalt", "lumen", "nova", "tidal")
_LIB_TOPICS = ("parsing JSON", "reading images", "talking to databases", "compressing files")
_TOOL_TOPICS = ("syncing folders", "monitoring disks", "converting audio", "managing backups")

_OCCUPATIONS = ("teacher", "nurse", "engineer", "student")
_REVIEWERS = {  # name -> occupation
    "Irene Moss": "teacher", "Jonas Berg": "nurse", "Kofi Mensah": "engineer", "Lena Vogel": "student",
    "Marco Rossi": "teacher", "Nadia Karim": "nurse", "Oskar Dahl": "engineer", "Priya Nair": "student",
    "Quentin Ames": "teacher", "Rosa Diaz": "nurse", "Samir Aziz": "engineer", "Tara Quinn": "student",
}
_PRODUCTS = {  # category -> (product, brand) choices
    "kitchen": (("AquaBoil kettle", "Kettlo"), ("SlicePro knife", "Edgeworth"), ("BrewMate grinder", "Beanix")),
    "electronics": (("SoundWave headphones", "Auralis"), ("PowerCell charger", "Voltix"),
                    ("ClearView monitor", "Pixelon")),
    "garden": (("GreenCut trimmer", "Hedgely"), ("RainFlow hose", "Aquaria")),
}


def _packages() -> list[dict]:
    rng = random.Random(13)
    maint = list(_MAINTAINERS)
    recs = []
    for i in range(32):
        kind = ("game", "library", "tool", "game")[i % 4]
        name = f"{_PKG_WORDS[i % 16]}{('-' + _PKG_WORDS[(i * 7 + 3) % 16]) if i >= 16 else ''}"
        if i % 5 == 0:
            langs = ["Rust", "Haskell"] if i % 2 == 0 else ["Python", "Perl"]
        else:
            langs = [list(_COMPILED)[(i * 3) % 5]]
        rec = {
            "id": f"pkg{i:02d}", "domain": "packages", "name": name, "is_game": kind == "game",
            "is_library": kind == "library", "genre": _GENRES[(i // 2) % 4] if kind == "game" else None,
            "multiplayer": kind == "game" and i % 3 == 0, "languages": langs,
            "compiled": _COMPILED[langs[0]], "license": _LICENSES[(i * 5) % 3],
            "maintainer": maint[(i * 3) % 8], "size_mb": rng.choice((4, 12, 35, 60, 85, 120, 240, 410)),
        }
        rec["debian_developer"] = _MAINTAINERS[rec["maintainer"]]
        rec["size"] = f"{rec['size_mb']} MB"
        lang_text = " and ".join(langs)
        if kind == "game":
            players = "with online multiplayer for up to eight players" if rec["multiplayer"] else "for a single player"
            head = f"{name}: a {rec['genre']} game {players}. The game is written in {lang_text}."
        elif kind == "library":
            head = (f"{name}: a library for {_LIB_TOPICS[i % 4]}, meant to be linked into other programs. "
                    f"It is written in {lang_text}.")
        else:
            head = f"{name}: a command-line tool for {_TOOL_TOPICS[i % 4]}. It is written in {lang_text}."
        rec["text"] = (f"{head} License: {rec['license']}. Installed size: {rec['size']}. "
                       f"Maintainer: {rec['maintainer']}.")
        recs.append(rec)
    return recs


def _reviews() -> list[dict]:
    rng = random.Random(31)
    names = list(_REVIEWERS)
    cats = list(_PRODUCTS)
    recs = []
    for i in range(32):
        cat = cats[i % 3]
        product, brand = _PRODUCTS[cat][(i // 3) % len(_PRODUCTS[cat])]
        positive = i % 4 in (0, 1) if i < 16 else i % 4 in (0, 3)
        shipping = i % 5 in (1, 3)
        price = rng.choice((9.99, 14.5, 19.99, 24.0, 29.99, 45.0, 59.99, 79.0, 120.0, 249.99))
        reviewer = names[(i * 5) % 12]
        rec = {
            "id": f"rev{i:02d}", "domain": "reviews", "product": product, "brand": brand, "category": cat,
            "price_value": price, "price": f"${price:g}" if price != int(price) else f"${int(price)}",
            "positive": positive, "shipping": shipping, "reviewer": reviewer,
            "occupation": _REVIEWERS[reviewer],
        }
        opinion = ("I love it and would buy it again, it works exactly as promised." if positive else
                   "Disappointing: it broke within a week and I regret buying it.")
        ship = (" The parcel arrived two weeks late and the box was crushed." if shipping else "")
        rec["text"] = (f"Review of the {product} by {brand}, bought for {rec['price']}. {opinion}{ship} "
                       f"Written by {reviewer}, a {rec['occupation']}.")
        recs.append(rec)
    return recs


PACKAGES: list[dict] = _packages()
"""32 package records: ``id``, ``text`` and the attributes the oracle answers from."""
REVIEWS: list[dict] = _reviews()
"""32 review records: ``id``, ``text`` and the attributes the oracle answers from."""


def corpus(domain: str) -> list[dict]:
    """The records of ``domain`` (``"packages"`` or ``"reviews"``); raises KeyError for another name."""
    return {"packages": PACKAGES, "reviews": REVIEWS}[domain]


# --------------------------------------------------------------------------------------------------
# oracle
# --------------------------------------------------------------------------------------------------

Pred = Callable[[dict], bool]

_CMP = [  # (pattern before the number, comparison)
    (r"at least|or more|no less than|>=", lambda v, x: v >= x),
    (r"at most|or less|no more than|<=", lambda v, x: v <= x),
    (r"above|over|more than|greater than|higher than|larger than|bigger than|exceed\w*|>", lambda v, x: v > x),
    (r"below|under|less than|lower than|smaller than|cheaper than|<", lambda v, x: v < x),
]


def _numeric_rule(q: str) -> tuple[Pred, str] | None:
    """``(predicate, rest of q)`` for a threshold question on the price or the installed size."""
    m = re.search(r"\$?\s*(\d+(?:\.\d+)?)\s*(mb|megabytes?|dollars?|usd)?", q)
    if not m:
        return None
    key = ("size_mb" if re.search(r"size|\bmb\b|megabyte|big|large|disk", q)
           else "price_value" if re.search(r"price|cost|\$|dollar|expensive|cheap|usd|paid", q) else None)
    if key is None:
        return None
    x = float(m.group(1))
    for pat, cmp in _CMP:
        if re.search(pat, q):
            return (lambda r, k=key, c=cmp: r.get(k) is not None and c(r[k], x)), ""
    return None


def _has(key: str, value: object) -> Pred:
    return lambda r: r.get(key) == value


#: Label rules, most specific first: (regex, predicate). A rule's match is removed from the question
#: before the next rules look at it (so "complain about shipping" is not also "negative").
_LABEL_RULES: list[tuple[str, Pred]] = [
    (r"(more than one|multiple|several|two or more|at least two|two|2)\s+(programming\s+)?languages",
     lambda r: len(r.get("languages") or ()) >= 2),
    (r"(complain\w*\s+(about|of)\s+(the\s+)?)?(shipping|delivery|delivered|shipped|arriv\w*\s+late|\blate\b|parcel)",
     _has("shipping", True)),
    (r"positive|favou?rable|recommend\w*|satisf\w*|happy|likes?\b|praise\w*|good review", _has("positive", True)),
    (r"negative|unfavou?rable|complain\w*|dissatisf\w*|unhappy|disappoint\w*|bad review|critical", _has("positive", False)),
    (r"debian developer|\bdd\b|official (debian )?developer", _has("debian_developer", True)),
    (r"\bcompiled\b", _has("compiled", True)),
    (r"\binterpreted\b|scripting language", _has("compiled", False)),
    *[(rf"\b{occ}s?\b", _has("occupation", occ)) for occ in _OCCUPATIONS],
    *[(rf"\b{lang.lower()}\b", (lambda r, lang=lang: lang in (r.get("languages") or ()))) for lang in _COMPILED],
    *[(rf"\b{lic.lower()}\b" + (r"|\bgpl\b|\bgnu general public" if lic == "GPL-3" else ""), _has("license", lic))
      for lic in _LICENSES],
    *[(rf"\b{g}\b", _has("genre", g)) for g in _GENRES],
    (r"multi-?player|online|several players|network play", _has("multiplayer", True)),
    (r"librar(y|ies)", _has("is_library", True)),
    (r"\bgames?\b|\bgaming\b|videogame", _has("is_game", True)),
    *[(rf"\b{cat}\b" + (r"|cookware|cooking" if cat == "kitchen" else r"|electronic|gadget" if cat == "electronics"
                        else r"|gardening"), _has("category", cat)) for cat in _PRODUCTS],
]

#: Span rules, first match wins: (regex, attribute whose values are the answer).
_SPAN_RULES: list[tuple[str, str]] = [
    (r"occupation|profession|\bjob\b|works? as|what does the (reviewer|author|customer) do", "occupation"),
    (r"genre|kind of game|type of game|category of (the )?game", "genre"),
    (r"licen[cs]e", "license"),
    (r"maintain", "maintainer"),
    (r"size|how (big|large)|megabytes|\bmb\b|disk space", "size"),
    (r"price|cost|how much|\$|paid|pay\b", "price"),
    (r"brand|manufacturer|company|maker|made by|vendor", "brand"),
    (r"reviewer|who wrote|author|customer|buyer|written by|person|who (reviewed|is reviewing)", "reviewer"),
    (r"product|item|what (was|is) (being )?reviewed|bought|purchas", "product"),
    (r"language", "languages"),
    (r"\bname\b|called|title", "name"),
]

_NUMBER = re.compile(r"^\$?\d+(\.\d+)?$")
_SIZE = re.compile(r"^(\d+)\s*mb$", re.IGNORECASE)


def _values(rec: dict, attr: str) -> list[str]:
    value = rec.get(attr)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [str(value)]


class Oracle:
    """``get_label``/``get_span`` answered from the corpus records' attributes (see the module doc).

    Args:
        records: the documents' records (each with ``text`` and attributes), e.g. :data:`PACKAGES`.

    Attributes:
        unknown: ``(kind, question)`` of every call whose question matched no rule, in call order.
        calls: number of primitive calls answered.
    """

    def __init__(self, records: list[dict]):
        self.by_text = {r["text"]: r for r in records}
        self.records = records
        self.unknown: list[tuple[str, str]] = []
        self.calls = 0
        self._entities = self._entity_table()

    def _entity_table(self) -> dict[str, dict]:
        """Attributes of values a plan may extract and then ask about (keys lowercased)."""
        ents: dict[str, dict] = {}
        for name, dd in _MAINTAINERS.items():
            ents[name.lower()] = {"debian_developer": dd}
        for name, occ in _REVIEWERS.items():
            ents[name.lower()] = {"occupation": occ}
        for lang, comp in _COMPILED.items():
            ents[lang.lower()] = {"languages": [lang], "compiled": comp}
        for g in _GENRES:
            ents[g] = {"genre": g, "is_game": True}
        for lic in _LICENSES:
            ents[lic.lower()] = {"license": lic}
        return ents

    def attributes(self, text: str) -> dict:
        """The attributes the oracle knows of ``text``: a document's record, or a derived value's
        (a person, a language, a genre, a license, a price like ``$59.99``, a size like ``120 MB``);
        ``{}`` for anything else."""
        if text in self.by_text:
            return self.by_text[text]
        t = text.strip().strip(".,;:").strip()
        if t.lower() in self._entities:
            return self._entities[t.lower()]
        if _NUMBER.match(t):
            return {"price_value": float(t.lstrip("$"))}
        m = _SIZE.match(t)
        if m:
            return {"size_mb": float(m.group(1))}
        return {}

    @staticmethod
    def label_predicate(question: str) -> Pred | None:
        """The predicate a yes/no ``question`` asks about, or None when no rule matches it."""
        q = " " + question.lower() + " "
        numeric = _numeric_rule(q)
        preds: list[Pred] = []
        if numeric:
            preds.append(numeric[0])
            q = re.sub(r"price|cost|size|\$?\s*\d+(\.\d+)?\s*(mb|megabytes?|dollars?|usd)?", " ", q)
        negate_words = re.findall(r"\bnot\b|n't\b|\bneither\b|\bnor\b|\bnon-", q)
        for pattern, pred in _LABEL_RULES:
            if re.search(pattern, q):
                preds.append(pred)
                q = re.sub(pattern, " ", q)
        if not preds:
            return None
        if "neither" in negate_words or "nor" in negate_words:
            return lambda r: not any(p(r) for p in preds)
        combine = any if re.search(r"\bor\b|\beither\b", q) else all
        negate = bool(negate_words)
        return lambda r: (not combine(p(r) for p in preds)) if negate else combine(p(r) for p in preds)

    @staticmethod
    def span_attribute(question: str) -> str | None:
        """The attribute a span ``question`` asks for, or None when no rule matches it."""
        q = question.lower()
        for pattern, attr in _SPAN_RULES:
            if re.search(pattern, q):
                return attr
        return None

    def get_label(self, texts: list[str], question: str) -> list[bool]:
        """One bool per text: the question's predicate on the text's attributes (all False if unknown)."""
        self.calls += 1
        pred = self.label_predicate(question)
        if pred is None:
            self.unknown.append(("label", question))
            return [False] * len(texts)
        return [bool(pred(self.attributes(t))) for t in texts]

    def get_span(self, texts: list[str], question: str) -> list[list[Span]]:
        """One span list per text: where the asked attribute's values occur in the text (none if unknown)."""
        self.calls += 1
        attr = self.span_attribute(question)
        if attr is None:
            self.unknown.append(("span", question))
            return [[] for _ in texts]
        out = []
        for t in texts:
            rec = self.attributes(t)
            values = _values(rec, attr) if "text" in rec else sorted(
                {v for r in self.records for v in _values(r, attr)}, key=len, reverse=True)
            spans, taken = [], []
            for v in values:
                pos = t.find(v)
                if pos >= 0 and not any(a < pos + len(v) and pos < b for a, b in taken):
                    spans.append(Span.of(t, pos, pos + len(v)))
                    taken.append((pos, pos + len(v)))
            out.append(sorted(spans, key=lambda s: s.start))
        return out


# --------------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One benchmark instruction.

    Attributes:
        id: short unique name, e.g. ``"b01"``.
        category: one of :data:`CATEGORIES`.
        domain: ``"packages"`` or ``"reviews"`` (the corpus the plan runs on).
        instruction: the user's instruction given to the planner.
        fields: output fields, ``[{"name", "description"}]`` (may be empty: retrieval only).
        gold: ``record -> None | {field: list[str] | bool}``: the expected output item of one document.
        reference: a correct plan (source), used by the tests and the scripted LLM.
    """

    id: str
    category: str
    domain: str
    instruction: str
    fields: tuple[dict, ...]
    gold: Callable[[dict], dict | None]
    reference: str = field(repr=False)


def _f(name: str, description: str) -> dict:
    return {"name": name, "description": description}


def _plan(labels: dict[str, str], cond: str | None, out: dict[str, str]) -> str:
    """A filter-then-extract reference plan: ``labels`` {var: question} asked of every text, ``cond`` a
    Python condition over ``var[i]`` (None: keep all), ``out`` {field: span question | "label:var"}."""
    lines = ["def plan(texts):"]
    lines += [f'    {v} = get_label(texts, "{q}")' for v, q in labels.items()]
    lines.append(f"    keep = [i for i in range(len(texts)) if {cond or 'True'}]")
    spans = {f: q for f, q in out.items() if not q.startswith("label:")}
    for f, q in spans.items():
        lines.append(f'    s_{f} = get_span([texts[i] for i in keep], "{q}")')
    lines.append("    results = [None] * len(texts)")
    lines.append("    for k, i in enumerate(keep):")
    items = ", ".join(f'"{f}": s_{f}[k]' if f in spans else f'"{f}": {q[6:]}[i]' for f, q in out.items())
    lines.append(f"        results[i] = {{{items}}}")
    lines.append("    return results")
    return "\n".join(lines) + "\n"


def _threshold_plan(span_q: str, op: str, x: float, labels: dict[str, str], cond: str | None,
                    out: dict[str, str]) -> str:
    """A multi-step reference plan: extract a number with ``span_q``, keep texts where ``number op x`` and
    ``cond`` hold, then extract ``out``."""
    head = ["def plan(texts):", f'    nums = get_span(texts, "{span_q}")']
    head += [f'    {v} = get_label(texts, "{q}")' for v, q in labels.items()]
    head += ["    ok = []",
             "    for i, spans in enumerate(nums):",
             "        good = False",
             "        for s in spans:",
             '            digits = "".join([c for c in s.text if c in "0123456789."])',
             f"            if digits and float(digits) {op} {x}:",
             "                good = True",
             "        ok.append(good)"]
    body = _plan({}, f"ok[i] and ({cond})" if cond else "ok[i]", out).split("\n", 1)[1]
    return "\n".join(head) + "\n" + body


def _spans_of(rec: dict, attr: str) -> list[str]:
    return _values(rec, attr)


def _g(cond: Callable[[dict], bool], **fields: object) -> Callable[[dict], dict | None]:
    """A gold function: None unless ``cond(rec)``, else ``{field: spec}`` with spec an attribute name
    (its values) or ``("bool", key)``."""
    def gold(rec: dict) -> dict | None:
        if not cond(rec):
            return None
        out: dict = {}
        for f, spec in fields.items():
            out[f] = bool(rec[spec[1]]) if isinstance(spec, tuple) else _spans_of(rec, spec)
        return out
    return gold


_ALL = lambda r: True  # noqa: E731
P, R = "packages", "reviews"
GAME_Q, LIB_Q = "Is this package a game?", "Is this package a library?"
POS_Q, SHIP_Q = "Is this review positive?", "Does the review complain about shipping?"

CASES: list[Case] = [
    # ---- basic: one primitive over every document ------------------------------------------------
    Case("b01", "basic", P, "Extract the programming language of each package.",
         (_f("language", "the programming language the package is written in"),),
         _g(_ALL, language="languages"), _plan({}, None, {"language": "What programming language is it written in?"})),
    Case("b02", "basic", P, "Extract the maintainer of every package.",
         (_f("maintainer", "the name of the package maintainer"),),
         _g(_ALL, maintainer="maintainer"), _plan({}, None, {"maintainer": "Who is the maintainer of the package?"})),
    Case("b03", "basic", P, "For each package, say whether it is a game.",
         (_f("is_game", "true if the package is a game"),),
         _g(_ALL, is_game=("bool", "is_game")), _plan({"g": GAME_Q}, None, {"is_game": "label:g"})),
    Case("b04", "basic", P, "Extract the license of each package.",
         (_f("license", "the software license, e.g. GPL-3"),),
         _g(_ALL, license="license"), _plan({}, None, {"license": "What is the license of the package?"})),
    Case("b05", "basic", P, "Retrieve all library packages.", (),
         _g(lambda r: r["is_library"]), _plan({"lib": LIB_Q}, "lib[i]", {})),
    Case("b06", "basic", R, "Extract the product name from each review.",
         (_f("product", "the name of the reviewed product"),),
         _g(_ALL, product="product"), _plan({}, None, {"product": "Which product is reviewed?"})),
    Case("b07", "basic", R, "Extract the price mentioned in every review.",
         (_f("price", "the price paid, e.g. $12.50"),),
         _g(_ALL, price="price"), _plan({}, None, {"price": "What is the price of the product?"})),
    Case("b08", "basic", R, "Extract the name of the reviewer of each review.",
         (_f("reviewer", "the name of the person who wrote the review"),),
         _g(_ALL, reviewer="reviewer"), _plan({}, None, {"reviewer": "Who wrote the review?"})),
    Case("b09", "basic", R, "For every review, tell whether it is positive.",
         (_f("positive", "true if the review is positive"),),
         _g(_ALL, positive=("bool", "positive")), _plan({"p": POS_Q}, None, {"positive": "label:p"})),
    Case("b10", "basic", R, "Retrieve the reviews that complain about shipping.", (),
         _g(lambda r: r["shipping"]), _plan({"s": SHIP_Q}, "s[i]", {})),
    Case("b11", "basic", R, "Extract the brand of the product in each review.",
         (_f("brand", "the brand or manufacturer of the product"),),
         _g(_ALL, brand="brand"), _plan({}, None, {"brand": "What is the brand of the product?"})),
    # ---- query-based: filter with get_label, then extract ----------------------------------------
    Case("q01", "query", P, "Extract the genre of each game.",
         (_f("genre", "the genre of the game"),),
         _g(lambda r: r["is_game"], genre="genre"), _plan({"g": GAME_Q}, "g[i]", {"genre": "What is the genre of the game?"})),
    Case("q02", "query", P, "Extract the programming language of each library package.",
         (_f("language", "the programming language the library is written in"),),
         _g(lambda r: r["is_library"], language="languages"),
         _plan({"lib": LIB_Q}, "lib[i]", {"language": "What programming language is it written in?"})),
    Case("q03", "query", P, "Extract the maintainers of game packages.",
         (_f("maintainer", "the name of the maintainer"),),
         _g(lambda r: r["is_game"], maintainer="maintainer"),
         _plan({"g": GAME_Q}, "g[i]", {"maintainer": "Who maintains the package?"})),
    Case("q04", "query", P, "Extract the license of packages written in Rust.",
         (_f("license", "the software license"),),
         _g(lambda r: "Rust" in r["languages"], license="license"),
         _plan({"rust": "Is the package written in Rust?"}, "rust[i]", {"license": "What is the license?"})),
    Case("q05", "query", P, "Extract the names of multiplayer games.",
         (_f("name", "the package name of the game"),),
         _g(lambda r: r["multiplayer"], name="name"),
         _plan({"mp": "Is this a multiplayer game?"}, "mp[i]", {"name": "What is the name of the package?"})),
    Case("q06", "query", R, "Extract the price from negative reviews.",
         (_f("price", "the price paid"),),
         _g(lambda r: not r["positive"], price="price"),
         _plan({"neg": "Is this review negative?"}, "neg[i]", {"price": "What is the price?"})),
    Case("q07", "query", R, "Extract the names of the reviewers who wrote positive reviews.",
         (_f("reviewer", "the reviewer's name"),),
         _g(lambda r: r["positive"], reviewer="reviewer"), _plan({"p": POS_Q}, "p[i]", {"reviewer": "Who wrote the review?"})),
    Case("q08", "query", R, "Extract the product from reviews that complain about shipping.",
         (_f("product", "the reviewed product"),),
         _g(lambda r: r["shipping"], product="product"), _plan({"s": SHIP_Q}, "s[i]", {"product": "Which product is reviewed?"})),
    Case("q09", "query", R, "Extract the brand from reviews of kitchen products.",
         (_f("brand", "the product's brand"),),
         _g(lambda r: r["category"] == "kitchen", brand="brand"),
         _plan({"k": "Is the product a kitchen product?"}, "k[i]", {"brand": "What is the brand?"})),
    Case("q10", "query", R, "Extract the occupation of the reviewers of electronics products.",
         (_f("occupation", "the reviewer's occupation"),),
         _g(lambda r: r["category"] == "electronics", occupation="occupation"),
         _plan({"e": "Is the product an electronics product?"}, "e[i]", {"occupation": "What is the reviewer's occupation?"})),
    # ---- multi-entity: boolean combinations and several fields -----------------------------------
    Case("m01", "multi_entity", P, "Retrieve games that are both strategy games and multiplayer, and extract their names.",
         (_f("name", "the package name"),),
         _g(lambda r: r["genre"] == "strategy" and r["multiplayer"], name="name"),
         _plan({"s": "Is this a strategy game?", "mp": "Is the game multiplayer?"}, "s[i] and mp[i]",
               {"name": "What is the name of the package?"})),
    Case("m02", "multi_entity", P, "Extract the programming language and the license of each library package.",
         (_f("language", "the programming language"), _f("license", "the software license")),
         _g(lambda r: r["is_library"], language="languages", license="license"),
         _plan({"lib": LIB_Q}, "lib[i]", {"language": "What programming language is it written in?",
                                          "license": "What is the license?"})),
    Case("m03", "multi_entity", P, "Extract the maintainer of packages that are games or libraries.",
         (_f("maintainer", "the maintainer's name"),),
         _g(lambda r: r["is_game"] or r["is_library"], maintainer="maintainer"),
         _plan({"g": GAME_Q, "lib": LIB_Q}, "g[i] or lib[i]", {"maintainer": "Who is the maintainer?"})),
    Case("m04", "multi_entity", P, "Extract the names of packages that are neither games nor libraries.",
         (_f("name", "the package name"),),
         _g(lambda r: not r["is_game"] and not r["is_library"], name="name"),
         _plan({"g": GAME_Q, "lib": LIB_Q}, "not g[i] and not lib[i]", {"name": "What is the name of the package?"})),
    Case("m05", "multi_entity", P, "For each package, extract its name and its programming language, and say whether it is a game.",
         (_f("name", "the package name"), _f("language", "the programming language"), _f("is_game", "true for a game")),
         _g(_ALL, name="name", language="languages", is_game=("bool", "is_game")),
         _plan({"g": GAME_Q}, None, {"name": "What is the package name?", "language": "Which programming language is used?",
                                     "is_game": "label:g"})),
    Case("m06", "multi_entity", P, "Extract the genre and the maintainer of puzzle or arcade games.",
         (_f("genre", "the genre"), _f("maintainer", "the maintainer's name")),
         _g(lambda r: r["genre"] in ("puzzle", "arcade"), genre="genre", maintainer="maintainer"),
         _plan({"pz": "Is this a puzzle game?", "ar": "Is this an arcade game?"}, "pz[i] or ar[i]",
               {"genre": "What is the genre of the game?", "maintainer": "Who maintains it?"})),
    Case("m07", "multi_entity", R, "Extract the product and the price from positive reviews.",
         (_f("product", "the product"), _f("price", "the price paid")),
         _g(lambda r: r["positive"], product="product", price="price"),
         _plan({"p": POS_Q}, "p[i]", {"product": "Which product is reviewed?", "price": "What is the price?"})),
    Case("m08", "multi_entity", R, "Retrieve reviews that are negative or complain about shipping, and extract the reviewer.",
         (_f("reviewer", "the reviewer's name"),),
         _g(lambda r: not r["positive"] or r["shipping"], reviewer="reviewer"),
         _plan({"n": "Is this review negative?", "s": SHIP_Q}, "n[i] or s[i]", {"reviewer": "Who wrote the review?"})),
    Case("m09", "multi_entity", R, "Extract the brand and the product of negative reviews of electronics.",
         (_f("brand", "the brand"), _f("product", "the product")),
         _g(lambda r: not r["positive"] and r["category"] == "electronics", brand="brand", product="product"),
         _plan({"n": "Is this review negative?", "e": "Is the product electronics?"}, "n[i] and e[i]",
               {"brand": "What is the brand?", "product": "Which product is reviewed?"})),
    Case("m10", "multi_entity", R,
         "Retrieve positive reviews of kitchen products that do not complain about shipping, and extract the product.",
         (_f("product", "the product"),),
         _g(lambda r: r["positive"] and r["category"] == "kitchen" and not r["shipping"], product="product"),
         _plan({"p": POS_Q, "k": "Is this a kitchen product?", "s": SHIP_Q}, "p[i] and k[i] and not s[i]",
               {"product": "Which product is reviewed?"})),
    # ---- multi-step: an extracted value feeds a later step -----------------------------------------
    Case("s01", "multi_step", R, "Extract the product of reviews whose price is above $50.",
         (_f("product", "the product"),),
         _g(lambda r: r["price_value"] > 50, product="product"),
         _threshold_plan("What is the price?", ">", 50, {}, None, {"product": "Which product is reviewed?"})),
    Case("s02", "multi_step", P, "Extract the names of packages whose installed size is over 100 MB.",
         (_f("name", "the package name"),),
         _g(lambda r: r["size_mb"] > 100, name="name"),
         _threshold_plan("What is the installed size?", ">", 100, {}, None, {"name": "What is the package name?"})),
    Case("s03", "multi_step", P,
         "Extract the programming languages of packages that are written in more than one programming language.",
         (_f("language", "a programming language of the package"),),
         _g(lambda r: len(r["languages"]) > 1, language="languages"),
         '''def plan(texts):
    langs = get_span(texts, "What programming languages is it written in?")
    results = [None] * len(texts)
    for i, spans in enumerate(langs):
        if len(spans) > 1:
            results[i] = {"language": spans}
    return results
'''),
    Case("s04", "multi_step", P,
         "Extract the maintainer of each game, then keep only the games whose maintainer is a Debian Developer.",
         (_f("maintainer", "the maintainer's name"),),
         _g(lambda r: r["is_game"] and r["debian_developer"], maintainer="maintainer"),
         '''def plan(texts):
    is_game = get_label(texts, "Is this package a game?")
    games = [i for i, ok in enumerate(is_game) if ok]
    maint = get_span([texts[i] for i in games], "Who is the maintainer?")
    results = [None] * len(texts)
    for i, spans in zip(games, maint):
        dd = get_label([s.text for s in spans], "Is this person a Debian Developer?")
        kept = [s for s, ok in zip(spans, dd) if ok]
        if kept:
            results[i] = {"maintainer": kept}
    return results
'''),
    Case("s05", "multi_step", R,
         "Extract each reviewer's name, then find out the reviewer's occupation, and return the names of reviewers who are teachers.",
         (_f("reviewer", "the name of a reviewer who is a teacher"),),
         _g(lambda r: r["occupation"] == "teacher", reviewer="reviewer"),
         '''def plan(texts):
    jobs = get_span(texts, "What is the reviewer's occupation?")
    keep = [i for i, spans in enumerate(jobs) if any([s.text.lower() == "teacher" for s in spans])]
    names = get_span([texts[i] for i in keep], "Who wrote the review?")
    results = [None] * len(texts)
    for i, spans in zip(keep, names):
        results[i] = {"reviewer": spans}
    return results
'''),
    Case("s06", "multi_step", R, "Extract the price of positive reviews, keeping only prices under $30.",
         (_f("price", "the price paid"),),
         _g(lambda r: r["positive"] and r["price_value"] < 30, price="price"),
         _threshold_plan("What is the price?", "<", 30, {"p": POS_Q}, "p[i]", {"price": "What is the price?"})),
    Case("s07", "multi_step", P,
         "Extract the programming language of each package, and keep only packages whose language is a compiled language.",
         (_f("language", "the programming language"),),
         _g(lambda r: r["compiled"], language="languages"),
         '''def plan(texts):
    langs = get_span(texts, "What programming language is it written in?")
    results = [None] * len(texts)
    for i, spans in enumerate(langs):
        compiled = get_label([s.text for s in spans], "Is this a compiled programming language?")
        kept = [s for s, ok in zip(spans, compiled) if ok]
        if kept:
            results[i] = {"language": kept}
    return results
'''),
    Case("s08", "multi_step", P,
         "Extract the genre of each game, and return the names of the games whose genre is strategy or racing.",
         (_f("name", "the package name of the game"),),
         _g(lambda r: r["genre"] in ("strategy", "racing"), name="name"),
         '''def plan(texts):
    genres = get_span(texts, "What is the genre of the game?")
    keep = [i for i, spans in enumerate(genres) if any([s.text.lower() in ("strategy", "racing") for s in spans])]
    names = get_span([texts[i] for i in keep], "What is the name of the package?")
    results = [None] * len(texts)
    for i, spans in zip(keep, names):
        results[i] = {"name": spans}
    return results
'''),
    Case("s09", "multi_step", R, "Extract the brands of products that cost at most $20.",
         (_f("brand", "the brand"),),
         _g(lambda r: r["price_value"] <= 20, brand="brand"),
         _threshold_plan("How much did it cost?", "<=", 20, {}, None, {"brand": "What is the brand?"})),
    Case("s10", "multi_step", P, "Extract the maintainers of packages written in Rust whose installed size is at least 60 MB.",
         (_f("maintainer", "the maintainer's name"),),
         _g(lambda r: "Rust" in r["languages"] and r["size_mb"] >= 60, maintainer="maintainer"),
         _threshold_plan("What is the installed size?", ">=", 60, {"rust": "Is it written in Rust?"}, "rust[i]",
                         {"maintainer": "Who is the maintainer?"})),
    Case("s11", "multi_step", R,
         "Extract the price and the reviewer of negative reviews that cost more than $25.",
         (_f("price", "the price paid"), _f("reviewer", "the reviewer's name")),
         _g(lambda r: not r["positive"] and r["price_value"] > 25, price="price", reviewer="reviewer"),
         _threshold_plan("What is the price?", ">", 25, {"n": "Is this review negative?"}, "n[i]",
                         {"price": "What is the price?", "reviewer": "Who wrote the review?"})),
]

#: The ``--quick`` subset: one or two instructions per category.
QUICK_CASES = ("b01", "b10", "q02", "m01", "s01", "s03")


def case_by_id(case_id: str) -> Case:
    """The case named ``case_id``; raises KeyError for an unknown id."""
    for c in CASES:
        if c.id == case_id:
            return c
    raise KeyError(case_id)
