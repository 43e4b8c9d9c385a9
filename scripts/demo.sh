#!/usr/bin/env bash
# The README's main command: from a fresh Debian machine to a signed Spark enclave image.
#   bash scripts/demo.sh
# Sets up what is missing (venv, Docker engine, a local registry on 127.0.0.1:5000, the
# bootstrapped base images), builds recipes/spark/pyspark-sql-agg, prints MRENCLAVE, MRSIGNER and
# the paths of the record and the policies, then runs the job natively in the built image.
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

echo
echo "demo: base images (first run: debootstrap + JDK + Spark download, several minutes; cached after)"
.venv/bin/ppml-build base bootstrap --registry "$registry" --only spark-standin
echo
echo "demo: NOTE: this base holds a STAND-IN Gramine (tests/standin: a small C-built libpal.so at"
echo "demo: Gramine's package paths). The measurement and signature are real and computed exactly"
echo "demo: as for Gramine 1.9, but this image cannot start an enclave: use a real Gramine base"
echo "demo: (base_images/gramine) on an SGX machine for that."
echo
mkdir -p ppml-out
if [[ ! -f "$key" ]]; then
    .venv/bin/ppml-build keygen --output "$key"
fi
.venv/bin/ppml-build build "$recipe" --key "$key" --output-dir "$out" \
    --tag ppml/pyspark-sql-agg:demo --policy gramine-ratls --policy ita
echo
echo "demo: running the job natively in the built image (--network none, no enclave):"
.venv/bin/ppml-build run-native "$recipe" --image ppml/pyspark-sql-agg:demo 2>/dev/null
