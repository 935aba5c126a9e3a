#!/usr/bin/env bash
# Everything Pulse needs on a fresh machine, idempotent and cached (stamps under .local/):
#   a virtualenv with the pinned packages, redis-server (Debian package), and the Kafka and
#   Flink jars resolved from Maven Central with mvn (infra/maven/pom.xml), and the job's small
#   Kafka deserializer jar compiled with javac from flink_jobs/java; node and chromium (Debian
#   packages) for the browser SDK's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PULSE_PYTHON:-python3}
STAMPS=.local/stamps
mkdir -p "$STAMPS"

say() { printf '[setup] %s\n' "$*"; }
hash_of() { sha256sum "$@" | sha256sum | cut -c1-16; }

"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "Pulse needs Python >= 3.11 ($PY is $("$PY" --version 2>&1))" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
# uv installs the same pinned packages as pip in ~8 s instead of ~40 s of CPU-bound resolving and
# unpacking (2026-12-07, this 2-core machine): a twentieth of a clean clone's `make test`. The stamp
# hashes this script too, so a change of how packages are installed installs them again.
UV_VERSION=0.13.9
want=$(hash_of pyproject.toml infra/setup.sh)
if [ "$(cat "$STAMPS/pip" 2>/dev/null)" != "$want" ]; then
  say "installing Python packages (pinned in pyproject.toml) with uv $UV_VERSION"
  .venv/bin/python -m pip install -q "uv==$UV_VERSION"
  .venv/bin/uv pip install -q --python .venv/bin/python -e ".[dev]"
  echo "$want" > "$STAMPS/pip"
fi

if ! command -v redis-server >/dev/null 2>&1; then
  say "installing redis-server with apt-get"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  # The Debian package starts a system Redis on 6379; Pulse runs its own.
  $SUDO service redis-server stop >/dev/null 2>&1 || true
fi

# The browser SDK's tests run under node; the browser tests (SDK example page, console) drive Debian's chromium.
apt_missing=""
command -v node >/dev/null 2>&1 || apt_missing="$apt_missing nodejs"
command -v npm >/dev/null 2>&1 || apt_missing="$apt_missing npm"
command -v chromium >/dev/null 2>&1 || apt_missing="$apt_missing chromium"
command -v openssl >/dev/null 2>&1 || apt_missing="$apt_missing openssl"  # TLS certificates of the secured local services
if [ -n "$apt_missing" ]; then
  say "installing$apt_missing with apt-get"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086 # the list is words
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $apt_missing >/dev/null
fi

# bench/serving.py's unpaced load generator: wrk, in C (its Python fallback takes much of the core the
# server needs on a small machine). Best effort: the tests do not need it.
if ! command -v wrk >/dev/null 2>&1; then
  say "installing wrk with apt-get (bench/serving.py)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"  # never a password prompt for a bench tool
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null 2>&1 \
    || say "wrk not installed (bench/serving.py uses its Python client instead)"
fi

# The console's chart library, vendored from npm into serving/static/vendor (git-ignored; no CDN at run time).
UPLOT_VERSION=1.6.32
if [ "$(cat "$STAMPS/uplot" 2>/dev/null)" != "$UPLOT_VERSION" ] || [ ! -f serving/static/vendor/uPlot.esm.js ]; then
  say "vendoring uPlot $UPLOT_VERSION from npm (the console's charts)"
  npm install --no-save --no-audit --no-fund --silent --prefix .local/npm "uplot@$UPLOT_VERSION" >/dev/null
  mkdir -p serving/static/vendor
  cp .local/npm/node_modules/uplot/dist/uPlot.esm.js .local/npm/node_modules/uplot/dist/uPlot.min.css \
     .local/npm/node_modules/uplot/LICENSE serving/static/vendor/
  echo "$UPLOT_VERSION" > "$STAMPS/uplot"
fi

command -v java >/dev/null 2>&1 || { echo "Java 17+ is needed (Kafka 4, Flink): apt-get install openjdk-17-jre-headless" >&2; exit 1; }
command -v javac >/dev/null 2>&1 || { echo "A JDK 17+ (javac) is needed to build the job's Kafka deserializer: apt-get install openjdk-17-jdk-headless" >&2; exit 1; }
command -v mvn >/dev/null 2>&1 || { echo "Maven is needed to fetch jars: apt-get install maven" >&2; exit 1; }
say "resolving Kafka and Flink jars, building pulse-flink-kafka.jar (cached in .local/jars)"
.venv/bin/python -m infra.local.jars
say "building the local Schema Registry for the tests (infra/registry/pom.xml; cached in .local/registry)"
.venv/bin/python -m infra.local.registry
# MovieLens 100K (u.data: 100,000 ratings, 943 users, 1,682 movies), the real ratings file the MF tests and
# `pulse eval mf` examples use. The package index ships it inside RecBole's wheel (dataset_example/ml-100k,
# in RecBole's "atomic" layout: a typed header line, then u.data's tab-separated columns); only that file
# is taken, checked against its digest, and written without the header. The package is not installed.
ML100K=.local/data/ml-100k/u.data
ML100K_SHA256=739785378ac6891059e1f26a6cb92f2bb088ef8d9e5807aea02dd6c708995282
if [ "$(sha256sum "$ML100K" 2>/dev/null | cut -c1-64)" != "$ML100K_SHA256" ]; then
  say "fetching MovieLens 100K ($ML100K) from the RecBole 1.2.0 wheel"
  rm -rf .local/cache/recbole && mkdir -p .local/cache/recbole "$(dirname "$ML100K")"
  .venv/bin/python -m pip download -q --no-deps --dest .local/cache/recbole recbole==1.2.0
  .venv/bin/python - "$ML100K" .local/cache/recbole/recbole-1.2.0-py3-none-any.whl <<'PY'
import sys, zipfile
out, wheel = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    lines = archive.read("recbole/dataset_example/ml-100k/ml-100k.inter").decode().splitlines(keepends=True)
assert lines[0].startswith("user_id:token\titem_id:token\trating:float\ttimestamp:float"), lines[0]
open(out, "w").writelines(lines[1:])
PY
  [ "$(sha256sum "$ML100K" | cut -c1-64)" = "$ML100K_SHA256" ] || { echo "MovieLens 100K: unexpected content in $ML100K" >&2; exit 1; }
  rm -rf .local/cache/recbole
fi

say "ready"
