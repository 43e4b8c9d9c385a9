#!/usr/bin/env bash
# The README's main command: from a fresh Debian machine to a signed Spark enclave image whose
# job runs under Gramine's own LibOS.
#   bash scripts/demo.sh
# Sets up what is missing (venv, Docker engine, a local registry on 127.0.0.1:5000, the base
# images: Debian, Gramine 1.9, Spark), builds recipes/spark/pyspark-sql-agg, prints MRENCLAVE,
# MRSIGNER and the paths of the record and the policies, then runs the job under gramine-direct
# (Gramine's LibOS without SGX) with the signed manifest the enclave would load.
#
# Gramine 1.9 is built from its source tarballs in $PPML_GRAMINE_SOURCE (default ../shared/gramine
# beside this checkout) when they are there; otherwise it is installed from Gramine's apt
# repository, which needs that network.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv
bash scripts/docker-up.sh
bash scripts/registry-up.sh

registry="127.0.0.1:${PPML_REGISTRY_PORT:-5000}"
recipe=recipes/spark/pyspark-sql-agg/recipe.yaml
out=ppml-out/pyspark-sql-agg
key=ppml-out/demo-enclave-key.pem   # a demo key; production keys live in an HSM/KMS
gramine_source=${PPML_GRAMINE_SOURCE:-../shared/gramine}

echo
echo "demo: base images (first run: debootstrap, Gramine from source, JDK + Spark: about 12 minutes; cached after)"
source_args=()
if [[ -f "$gramine_source/SHA256SUMS" ]]; then
    source_args=(--gramine-source "$gramine_source")
else
    echo "demo: no Gramine source tarballs at $gramine_source: Gramine 1.9 comes from packages.gramineproject.io"
fi
.venv/bin/ppml-build base bootstrap --registry "$registry" --only spark-gramine "${source_args[@]}"
mkdir -p ppml-out
if [[ ! -f "$key" ]]; then
    .venv/bin/ppml-build keygen --output "$key"
fi
.venv/bin/ppml-build build "$recipe" --key "$key" --output-dir "$out" \
    --tag ppml/pyspark-sql-agg:demo --policy gramine-ratls --policy ita
echo
echo "demo: running the job under gramine-direct with the signed manifest (--network none; no SGX needed):"
.venv/bin/ppml-build run-direct "$recipe" --image ppml/pyspark-sql-agg:demo | grep -E '^RESULT ' \
    || { echo "demo: error: the job printed no RESULT lines under gramine-direct" >&2; exit 1; }
