#!/usr/bin/env bash
# Make a second Ray release (VERSION) importable from DEST, for the test of a driver whose Ray
# differs from its cluster's. Usage: ensure-ray-other.sh VERSION DEST [PIP]
# Why --no-deps --target: only the `ray` package itself must differ; its dependencies come
# from the project's venv (PYTHONPATH=DEST puts this Ray first). ~70 MB, about 10 s here.
# Why a script: CI runs on a fresh machine; the Ray tests' fixture calls it.
set -euo pipefail

VERSION="$1"; DEST="$2"; PIP="${3:-.venv/bin/pip}"
if [ -r "$DEST/ray-$VERSION.dist-info/METADATA" ] && [ -r "$DEST/ray/__init__.py" ]; then
  exit 0
fi
echo "[ray-other] installing ray==$VERSION (no dependencies) into $DEST" >&2
rm -rf "$DEST.partial"
"$PIP" install -q --disable-pip-version-check --no-deps --target "$DEST.partial" "ray==$VERSION" >&2
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
