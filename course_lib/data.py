"""The course's text data: small real corpora shipped in `data/`, and two online loaders.

Everything here reads the files that `scripts/build_data.py` writes (see `data/README.md` for
sources, licences and counts). Every file is gzip-compressed UTF-8 text, one item per line;
`.tsv.gz` files start with a header line and have tab-separated columns.

| loader                     | returns                       | corpus                                  |
|----------------------------|-------------------------------|-----------------------------------------|
| `english_sentences`        | sentences                     | Brown corpus (Tatoeba-like)             |
| `brown_genres`             | (genre, sentence) pairs       | Brown corpus, 15 genres                 |
| `english_paragraphs`       | paragraphs                    | State of the Union (WikiText-like)      |
| `parallel_pairs`           | (English, Italian/Portuguese) | LibreOffice help                        |
| `parallel_rows`            | (id, English, translation)    | LibreOffice help, with the page's id    |
| `italian_fortunes`         | short Italian texts           | fortunes-it                             |
| `udhr`                     | the declaration's paragraphs  | UDHR in 8 languages                     |
| `load_multilingual`        | {language: lines}             | `train.{lang}` files, as XLM-R reads them |
| `tatoeba_en_it`, `wikitext2` | the seeds' corpora, online  | fall back to the shipped ones offline   |

Nothing here touches the network unless you call an online loader, and never when the
environment sets `COURSE_OFFLINE=1` or `HF_HUB_OFFLINE=1`.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

from .paths import course_path

SPLITS = ("train", "valid")
PARALLEL_LANGS = ("it", "pt")
UDHR_LANGS = ("eng", "ita", "por", "zul", "xho", "nso", "ven", "swh")


class DataError(ValueError):
    """A data file is missing, empty or malformed, or a loader got a bad argument."""


# ---------------------------------------------------------------------------------------------
# Reading files: the one place that opens them
# ---------------------------------------------------------------------------------------------
def data_dir() -> Path:
    """The data folder: $COURSE_DATA_DIR if set, else the shipped data/ (`paths.course_path("data")`)."""
    return Path(os.environ.get("COURSE_DATA_DIR") or course_path("data"))


def read_lines(path) -> list[str]:
    """The non-blank lines of a text file, `.gz` or plain, decoded as UTF-8.

    Raises DataError naming the file for a missing file, a broken gzip file, undecodable bytes
    (with the line and byte offset) and a file without any text.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "file not found"
        raise DataError(f"{path}: {what}")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: not a valid gzip file ({e})") from None
    return _decode_lines(raw, path)


def _decode_lines(raw: bytes, name) -> list[str]:
    """Bytes -> non-blank lines (UTF-8, \n or \r\n endings); `name` is used in errors."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{name}: line {line}: bytes that are not UTF-8 at byte offset {e.start} ({raw[e.start : e.start + 4]!r})"
        ) from None
    lines = [line.rstrip("\r") for line in text.removeprefix("\ufeff").split("\n")]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise DataError(f"{name}: file is empty")
    return lines


def _read_tsv(relpath: str, columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Rows of a shipped .tsv.gz file, header checked, each row with len(columns) fields."""
    path = data_dir() / relpath
    header, *lines = read_lines(path)
    if tuple(header.split("\t")) != columns:
        raise DataError(
            f"{path}: line 1: expected the header {'|'.join(columns)!r}, got {header.replace(chr(9), '|')!r}"
        )
    rows = []
    for n, line in enumerate(lines, start=2):
        fields = tuple(line.split("\t"))
        if len(fields) != len(columns):
            raise DataError(f"{path}: line {n}: expected {len(columns)} tab-separated fields, got {len(fields)}")
        rows.append(fields)
    if not rows:
        raise DataError(f"{path}: no data lines after the header")
    return rows


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise DataError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def _take(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


# ---------------------------------------------------------------------------------------------
# The shipped corpora
# ---------------------------------------------------------------------------------------------
def english_sentences(split: str = "train", max_words: int | None = None, limit: int | None = None) -> list[str]:
    """Brown corpus sentences (detokenised, no POS tags); at most `max_words` words each."""
    _check_choice("split", split, SPLITS)
    sentences = [text for _, _, text in _read_tsv(f"en/brown.{split}.tsv.gz", ("file", "genre", "text"))]
    if max_words is not None:
        sentences = [s for s in sentences if len(s.split()) <= max_words]
    return _take(sentences, limit)


def brown_genres(split: str = "train") -> list[tuple[str, str]]:
    """(genre, sentence) pairs from the Brown corpus: 15 genres, a small classification task."""
    return [(genre, text) for _, genre, text in brown_rows(split)]


def brown_rows(split: str = "train") -> list[tuple[str, str, str]]:
    """(file, genre, sentence) rows of the Brown corpus, in corpus order (notebook 08 splits by file)."""
    _check_choice("split", split, SPLITS)
    return _read_tsv(f"en/brown.{split}.tsv.gz", ("file", "genre", "text"))


def english_paragraphs(split: str = "train", limit: int | None = None) -> list[str]:
    """Paragraphs of US State of the Union addresses, 1790-2026 (split by speech)."""
    _check_choice("split", split, SPLITS)
    rows = _read_tsv(f"en/sotu.{split}.tsv.gz", ("year", "president", "text"))
    return _take([text for _, _, text in rows], limit)


def parallel_pairs(lang: str = "it", split: str = "train", limit: int | None = None) -> list[tuple[str, str]]:
    """(English, translation) pairs from the LibreOffice help; lang is "it" or "pt" (pt-BR)."""
    return [(en, xx) for _, en, xx in parallel_rows(lang, split, limit)]


def parallel_rows(lang: str = "it", split: str = "train", limit: int | None = None) -> list[tuple[str, str, str]]:
    """(id, English, translation) rows from the LibreOffice help. The id is the help page's path, `#`, and
    the paragraph's id in the page (`scalc/01/04060106#par_id3150688`); its first folder names the module
    the page documents (`shared`, `scalc`, `swriter`, ...)."""
    _check_choice("lang", lang, PARALLEL_LANGS)
    _check_choice("split", split, SPLITS)
    return _take(_read_tsv(f"parallel/en-{lang}.{split}.tsv.gz", ("id", "en", lang)), limit)


def italian_fortunes(split: str = "train") -> list[str]:
    """Italian fortunes (quotations, jokes, Murphy's laws), one per item."""
    _check_choice("split", split, SPLITS)
    return read_lines(data_dir() / f"it/fortunes.{split}.txt.gz")


def udhr(lang: str) -> list[str]:
    """The Universal Declaration of Human Rights in one language (ISO 639-3 code), paragraph by
    paragraph; items are aligned across languages (preamble, then articles 1-30)."""
    _check_choice("lang", lang, UDHR_LANGS)
    return [text for _, _, text in _read_tsv(f"udhr/{lang}.tsv.gz", ("article", "index", "text"))]


def multilingual_dir() -> Path:
    """The shipped multilingual corpus: train.{lang}.gz / eval.{lang}.gz for 8 languages."""
    return data_dir() / "multilingual"


def load_multilingual(folder=None, split: str = "train", langs=None) -> dict[str, list[str]]:
    """Read a folder laid out as XLM-R's data loader reads it: one file per language, `train.{lang}` and
    `eval.{lang}` (optionally gzipped), one sentence per line. Returns {lang: lines}, sorted by
    language; `langs` picks some of them (default: every language found)."""
    _check_choice("split", split, ("train", "eval"))
    folder = Path(folder) if folder is not None else multilingual_dir()
    if not folder.is_dir():
        raise DataError(f"{folder}: multilingual folder not found")
    files = {}
    for path in sorted(folder.iterdir()):
        name = path.name.removesuffix(".gz")
        prefix, _, lang = name.partition(".")
        if prefix == split and lang and path.is_file():
            files.setdefault(lang, path)
    if not files:
        raise DataError(f"{folder}: no {split}.<lang> or {split}.<lang>.gz files")
    if langs is None:
        langs = sorted(files)
    elif isinstance(langs, str):
        langs = [langs]
    for lang in langs:
        if lang not in files:
            raise DataError(
                f"{folder}: unknown language {lang!r} (no {split}.{lang}); available: {', '.join(sorted(files))}"
            )
    return {lang: read_lines(files[lang]) for lang in langs}


# ---------------------------------------------------------------------------------------------
# Online loaders for the seeds' corpora, with a local cache and an offline fallback
# ---------------------------------------------------------------------------------------------
# Tatoeba English-Italian pairs as packaged by manythings.org for Anki (tab-separated:
# English, Italian, attribution). Licence: CC-BY 2.0 (France), tatoeba.org.
TATOEBA_EN_IT_URL = "https://www.manythings.org/anki/ita-eng.zip"
# WikiText-2 (raw), the Hugging Face parquet files. Licence: CC-BY-SA 3.0 / GFDL.
WIKITEXT2_URL = (
    "https://huggingface.co/datasets/Salesforce/wikitext/resolve/main/wikitext-2-raw-v1/{split}-00000-of-00001.parquet"
)
DOWNLOAD_TIMEOUT = 15  # seconds


def offline() -> bool:
    """True when COURSE_OFFLINE=1 or HF_HUB_OFFLINE=1: then nothing touches the network."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("COURSE_OFFLINE", "HF_HUB_OFFLINE")
    )


def cache_dir(path=None) -> Path:
    """Where downloads are kept: `path`, else $COURSE_CACHE_DIR, else ~/.cache/course_lib."""
    return Path(path or os.environ.get("COURSE_CACHE_DIR") or Path.home() / ".cache" / "course_lib")


def _download(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT) -> None:
    """Download url to dest atomically: a temporary file in the same folder, then a rename."""
    import shutil
    import tempfile
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "Mozilla/5.0 (course_lib)"})
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as r:
            shutil.copyfileobj(r, out)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cached(url: str, filename: str, folder) -> tuple[Path | None, str]:
    """(path, "") of the cached or freshly downloaded file, or (None, why not)."""
    path = cache_dir(folder) / filename
    if path.is_file() and path.stat().st_size > 0:
        return path, ""  # a cached file: no network at all
    if offline():
        return None, "offline (COURSE_OFFLINE or HF_HUB_OFFLINE is set)"
    try:
        _download(url, path)
    except (OSError, ValueError) as e:  # URLError, HTTPError and timeouts are OSErrors
        return None, f"download failed ({type(e).__name__})"
    return path, ""


def parse_tatoeba(path) -> list[tuple[str, str]]:
    """(English, Italian) pairs from a manythings.org Anki file (.zip or the .txt inside it):
    one pair per line, `English<TAB>Italian<TAB>attribution`."""
    import zipfile

    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.namelist() if m.endswith(".txt") and "about" not in m]
            if not members:
                raise DataError(f"{path}: no sentence file (.txt) inside the zip")
            lines = _decode_lines(z.read(members[0]), f"{path}!{members[0]}")
    else:
        lines = read_lines(path)
    pairs = []
    for n, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(f"{path}: line {n}: expected 'English<TAB>Italian[<TAB>...]'")
        pairs.append((fields[0].strip(), fields[1].strip()))
    return pairs


def tatoeba_en_it(cache_dir=None, limit: int | None = None) -> list[tuple[str, str]]:
    """Tatoeba English-Italian sentence pairs (downloaded once, then cached). Offline, or if the
    download fails, it prints one line and returns the shipped LibreOffice en-it pairs instead."""
    path, why = _cached(TATOEBA_EN_IT_URL, "tatoeba-ita-eng.zip", cache_dir)
    if path is None:
        print(f"tatoeba_en_it: {why}; using the shipped LibreOffice help en-it pairs instead.")
        return parallel_pairs("it", "train", limit=limit)
    return _take(parse_tatoeba(path), limit)


def parse_wikitext_parquet(path) -> list[str]:
    """Paragraphs of a WikiText parquet file (column `text`): blank lines and `= Heading =`
    lines dropped, whitespace stripped."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        rows = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    except Exception as e:  # pyarrow raises its own error types for broken files
        raise DataError(f"{path}: not a WikiText parquet file with a 'text' column ({e})") from None
    paragraphs = [r.strip() for r in rows if r and r.strip()]
    paragraphs = [p for p in paragraphs if not (p.startswith("=") and p.endswith("="))]
    if not paragraphs:
        raise DataError(f"{path}: no text")
    return paragraphs


def wikitext2(split: str = "train", cache_dir=None) -> list[str]:
    """WikiText-2 (raw) paragraphs (downloaded once, then cached); split is train, valid or test.
    Offline, or if the download fails, it prints one line and returns the shipped State of the
    Union paragraphs instead (its valid split for valid and test)."""
    _check_choice("split", split, ("train", "valid", "test"))
    name = {"train": "train", "valid": "validation", "test": "test"}[split]
    path, why = _cached(WIKITEXT2_URL.format(split=name), f"wikitext-2-raw-v1.{name}.parquet", cache_dir)
    if path is None:
        print(f"wikitext2: {why}; using the shipped State of the Union paragraphs instead.")
        return english_paragraphs("train" if split == "train" else "valid")
    return parse_wikitext_parquet(path)
