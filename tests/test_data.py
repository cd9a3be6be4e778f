"""Tests of course_lib.data and of the shipped data/ folder. Offline and fast."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from course_lib import data, paths
from course_lib.data import DataError

DATA = paths.DATA
LANGS = {"eng", "ita", "por", "zul", "xho", "nso", "ven", "swh"}


# ---------------------------------------------------------------------------------------------
# The shipped files agree with the manifest
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifest():
    return json.loads((DATA / "manifest.json").read_text(encoding="utf-8"))


def test_manifest_lists_exactly_the_data_files(manifest):
    on_disk = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file()}
    on_disk -= {"README.md", "manifest.json"}
    listed = {e["path"] for e in manifest["files"]}
    assert on_disk == listed


def test_manifest_sha256_lines_and_words(manifest):
    for e in manifest["files"]:
        blob = (DATA / e["path"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == e["sha256"], e["path"]
        # deterministic gzip: no mtime, no file name
        assert blob[:3] == b"\x1f\x8b\x08" and blob[3] & 0x08 == 0 and blob[4:8] == b"\0\0\0\0"
        text = gzip.decompress(blob).decode("utf-8")
        assert hashlib.sha256(text.encode()).hexdigest() == e["sha256_uncompressed"], e["path"]
        assert text.endswith("\n") and "\r" not in text, e["path"]
        lines = text[:-1].split("\n")
        if e["header"]:
            assert lines[0] == e["header"], e["path"]
            columns = e["header"].split("\t")
            lines = lines[1:]
            idx = [columns.index(c) for c in e["word_fields"]]
            rows = [line.split("\t") for line in lines]
            assert all(len(r) == len(columns) and all(r) for r in rows), e["path"]
            words = sum(len(r[i].split()) for r in rows for i in idx)
        else:
            assert all(line and "\t" not in line for line in lines), e["path"]
            words = sum(len(line.split()) for line in lines)
        assert len(lines) == e["lines"], e["path"]
        assert words == e["words"], e["path"]
        assert e["sources"] and e["licence"], e["path"]


def test_data_folder_is_small_enough():
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total <= 25 * 1024 * 1024


def test_readme_quotes_the_manifest(manifest):
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for e in manifest["files"]:
        assert e["sha256"] in readme and f"{e['lines']:,}" in readme, e["path"]
    for name, src in manifest["sources"].items():
        assert name in readme and src["version"] in readme


# ---------------------------------------------------------------------------------------------
# The loaders return sensible content
# ---------------------------------------------------------------------------------------------
def test_english_sentences(english_train, english_valid):
    assert len(english_train) > 40_000 and len(english_valid) > 4_000
    assert all(isinstance(s, str) and s and "\t" not in s for s in english_train)
    files = {
        split: {line.split("\t")[0] for line in data.read_lines(DATA / f"en/brown.{split}.tsv.gz")[1:]}
        for split in ("train", "valid")
    }
    assert len(files["valid"]) == 50 and not files["train"] & files["valid"]  # split by document
    tag = re.compile(r"/(at|nn|nns|np|vbd|vbz|jj|in|cc|rb|pps)\b")
    assert not [s for s in english_train if tag.search(s)]
    assert not [s for s in english_train if re.search(r" [,.;:!?](?: |$)", s)]
    assert not [s for s in english_train if "``" in s or "''" in s]
    assert english_train[0].startswith("The Fulton County Grand Jury said Friday")
    short = data.english_sentences("train", max_words=12, limit=100)
    assert len(short) == 100 and all(len(s.split()) <= 12 for s in short)


def test_brown_genres():
    pairs = data.brown_genres("valid")
    assert {g for g, _ in pairs} == {g for g, _ in data.brown_genres("train")}
    assert len({g for g, _ in pairs}) == 15
    assert all(isinstance(g, str) and isinstance(s, str) for g, s in pairs)


def test_english_paragraphs():
    paras = data.english_paragraphs("train")
    assert len(paras) > 20_000 and len(data.english_paragraphs("valid", limit=7)) == 7
    assert not [p for p in paras if re.search(r"\[(applause|laughter|inaudible)\]", p, re.I)]
    assert not [p for p in paras if "  " in p or p != p.strip() or "\t" in p]
    assert sum(len(p.split()) for p in paras) > 1_500_000


@pytest.mark.parametrize("lang", ["it", "pt"])
def test_parallel_pairs(lang):
    pairs = data.parallel_pairs(lang, "valid")
    assert len(pairs) > 1_000 and len(data.parallel_pairs(lang, limit=5)) == 5
    assert all(isinstance(en, str) and isinstance(xx, str) and en and xx for en, xx in pairs)
    assert all(en != xx for en, xx in pairs)
    assert len(set(pairs)) == len(pairs)
    assert not [p for p in pairs if "<" in p[0] and "</" in p[0]]  # no HTML markup left
    rows = data.parallel_rows(lang, "valid")
    assert [(en, xx) for _, en, xx in rows] == pairs
    assert all(row_id.count("#") == 1 and "/" in row_id.split("#")[0] for row_id, _, _ in rows)


def test_italian_fortunes():
    train, valid = data.italian_fortunes("train"), data.italian_fortunes("valid")
    assert len(train) > 2_000 and valid and not set(train) & set(valid)
    text = " ".join(train)
    assert " è " in text and "più" in text and "\t" not in text


def test_udhr_eight_languages_aligned():
    decl = {lang: data.udhr(lang) for lang in sorted(LANGS)}
    assert len(decl) == 8
    assert all(len(v) >= 55 for v in decl.values())
    assert any("born free and equal" in t for t in decl["eng"])
    assert len(set(decl["eng"]) & set(decl["zul"])) == 0


def test_multilingual_seed_format():
    train = data.load_multilingual()
    evals = data.load_multilingual(split="eval")
    assert set(train) == set(evals) == LANGS
    assert data.multilingual_dir().is_dir()
    for lang in LANGS:
        assert len(evals[lang]) >= 20, lang
        assert not set(train[lang]) & set(evals[lang]), lang
    assert len(train["eng"]) > 100 * len(train["swh"])  # the imbalance is real
    assert len(train["zul"]) > 10 * len(train["swh"])
    two = data.load_multilingual(langs=["zul", "swh"])
    assert list(two) == ["zul", "swh"] and two["swh"] == train["swh"]


def test_import_does_not_load_the_network_stack():
    code = "import sys, course_lib.data; print('urllib.request' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# Errors name the file, the line or the bad value
# ---------------------------------------------------------------------------------------------
def test_read_lines_plain_and_gz(tmp_path):
    (tmp_path / "a.txt").write_text("one\r\ntwo\n\nthree", encoding="utf-8")
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\ufeffone\ntwo\nthree\n")
    assert data.read_lines(tmp_path / "a.txt") == ["one", "two", "three"]
    assert data.read_lines(tmp_path / "a.txt.gz") == ["one", "two", "three"]


def test_read_lines_missing_file(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(DataError, match=re.escape(str(path))):
        data.read_lines(path)


@pytest.mark.parametrize("name", ["empty.txt", "empty.txt.gz", "blank.txt"])
def test_read_lines_empty_file(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(b""))
    else:
        path.write_text("" if name == "empty.txt" else "\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*empty"):
        data.read_lines(path)


def test_read_lines_undecodable_bytes(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("ok\ncaff\u00e8\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        data.read_lines(path)
    msg = str(err.value)
    assert str(path) in msg and "line 2" in msg and "byte offset 7" in msg


def test_read_lines_broken_gzip(tmp_path):
    path = tmp_path / "broken.txt.gz"
    path.write_bytes(gzip.compress(b"hello\n" * 100)[:30])
    with pytest.raises(DataError, match=re.escape(str(path))):
        data.read_lines(path)


def test_data_dir_override_and_bad_tsv(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "en" / "brown.train.tsv.gz"))):
        data.english_sentences()
    (tmp_path / "en").mkdir()
    bad = tmp_path / "en" / "sotu.train.tsv.gz"
    bad.write_bytes(gzip.compress(b"year\tpresident\ttext\n1790\tWashington\n"))
    with pytest.raises(DataError, match=re.escape(str(bad)) + ": line 2: expected 3"):
        data.english_paragraphs()
    bad.write_bytes(gzip.compress(b"when\twho\ttext\n1790\tWashington\thello\n"))
    with pytest.raises(DataError, match=re.escape(str(bad)) + ": line 1: expected the header"):
        data.english_paragraphs()


@pytest.mark.parametrize(
    "call, value",
    [
        (lambda: data.english_sentences("test"), "test"),
        (lambda: data.brown_genres("dev"), "dev"),
        (lambda: data.english_paragraphs("validation"), "validation"),
        (lambda: data.parallel_pairs("it", "eval"), "eval"),
        (lambda: data.italian_fortunes("all"), "all"),
        (lambda: data.load_multilingual(split="valid"), "valid"),
        (lambda: data.wikitext2("dev"), "dev"),
    ],
)
def test_bad_split_names_the_value(call, value):
    with pytest.raises(DataError, match=f"split='{value}'"):
        call()


def test_bad_language_names_value_and_choices():
    with pytest.raises(DataError, match="lang='fr'.*'it', 'pt'"):
        data.parallel_pairs("fr")
    with pytest.raises(DataError, match="lang='deu'.*'eng'"):
        data.udhr("deu")


def test_multilingual_errors(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=re.escape(str(missing)) + ": multilingual folder not found"):
        data.load_multilingual(missing)
    folder = tmp_path / "corpus"
    folder.mkdir()
    with pytest.raises(DataError, match=r"no train\.<lang>"):
        data.load_multilingual(folder)
    (folder / "train.en").write_text("hello world\n", encoding="utf-8")
    with gzip.open(folder / "train.sw.gz", "wt", encoding="utf-8") as f:
        f.write("habari ya dunia\n")
    (folder / "eval.en").write_text("good bye\n", encoding="utf-8")
    assert data.load_multilingual(folder) == {"en": ["hello world"], "sw": ["habari ya dunia"]}
    assert data.load_multilingual(folder, split="eval") == {"en": ["good bye"]}
    with pytest.raises(DataError, match="unknown language 'fr'.*available: en, sw"):
        data.load_multilingual(folder, langs=["en", "fr"])
    (folder / "train.xh").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(str(folder / "train.xh")) + ": file is empty"):
        data.load_multilingual(folder)


# ---------------------------------------------------------------------------------------------
# Online loaders: offline fallback, cache, and the real parsing path, never the network
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def online(monkeypatch):
    """Pretend to be online; any real download attempt fails the test."""
    monkeypatch.delenv("COURSE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(url, dest, timeout=None):
        raise AssertionError(f"network access: {url}")

    monkeypatch.setattr(data, "_download", no_network)
    return monkeypatch


def _tatoeba_zip(path: Path) -> Path:
    rows = (
        "Hi.\tCiao.\tCC-BY 2.0 (France) Attribution: tatoeba.org #1\n"
        "I'm hungry.\tHo fame.\tCC-BY 2.0 (France) Attribution: tatoeba.org #2\n"
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("_about.txt", "about the file")
        z.writestr("ita.txt", rows)
    return path


@pytest.mark.parametrize("var", ["COURSE_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_fallback_prints_one_line(online, tmp_path, capsys, var):
    online.setenv(var, "1")
    pairs = data.tatoeba_en_it(cache_dir=tmp_path, limit=5)
    assert pairs == data.parallel_pairs("it", "train", limit=5)
    paras = data.wikitext2("valid", cache_dir=tmp_path)
    assert paras == data.english_paragraphs("valid")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith("tatoeba_en_it: offline") and "LibreOffice" in out[0]
    assert out[1].startswith("wikitext2: offline") and "State of the Union" in out[1]
    assert str(tmp_path) not in "\n".join(out)
    assert list(tmp_path.iterdir()) == []


def test_cached_tatoeba_is_read_without_network(online, tmp_path, capsys):
    _tatoeba_zip(tmp_path / "tatoeba-ita-eng.zip")
    assert data.tatoeba_en_it(cache_dir=tmp_path) == [("Hi.", "Ciao."), ("I'm hungry.", "Ho fame.")]
    online.setenv("COURSE_CACHE_DIR", str(tmp_path))
    assert data.tatoeba_en_it(limit=1) == [("Hi.", "Ciao.")]
    assert capsys.readouterr().out == ""


def test_cached_wikitext_is_read_without_network(online, tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        "",
        " = Valkyria Chronicles III = \n",
        "",
        " Senjō no Valkyria 3 is a game . \n",
        " = = Gameplay = = \n",
        " As with previous games , ... \n",
    ]
    pq.write_table(pa.table({"text": rows}), tmp_path / "wikitext-2-raw-v1.validation.parquet")
    assert data.wikitext2("valid", cache_dir=tmp_path) == [
        "Senjō no Valkyria 3 is a game .",
        "As with previous games , ...",
    ]
    assert capsys.readouterr().out == ""


def test_download_path_with_a_local_url(monkeypatch, tmp_path, capsys):
    """The real download + cache + parse path, with a file:// URL instead of the internet."""
    monkeypatch.delenv("COURSE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    source = _tatoeba_zip(tmp_path / "ita-eng.zip")
    cache = tmp_path / "cache"
    monkeypatch.setattr(data, "TATOEBA_EN_IT_URL", source.as_uri())
    assert data.tatoeba_en_it(cache_dir=cache)[1] == ("I'm hungry.", "Ho fame.")
    assert [p.name for p in cache.iterdir()] == ["tatoeba-ita-eng.zip"]  # no temp file left
    # a failed download falls back and leaves no file behind
    monkeypatch.setattr(data, "TATOEBA_EN_IT_URL", (tmp_path / "missing.zip").as_uri())
    pairs = data.tatoeba_en_it(cache_dir=tmp_path / "other", limit=3)
    assert pairs == data.parallel_pairs("it", limit=3)
    assert capsys.readouterr().out.startswith("tatoeba_en_it: download failed")
    assert not list((tmp_path / "other").iterdir())


def test_parse_tatoeba_errors(tmp_path):
    path = tmp_path / "ita.txt"
    path.write_text("Hi.\tCiao.\tattribution\nonly one field\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(str(path)) + ": line 2"):
        data.parse_tatoeba(path)
    assert data.parse_tatoeba(_tatoeba_zip(tmp_path / "t.zip"))[0] == ("Hi.", "Ciao.")
