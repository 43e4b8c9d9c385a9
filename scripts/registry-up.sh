#!/usr/bin/env bash
# A local distribution-v2 registry for the demo on 127.0.0.1:${PPML_REGISTRY_PORT:-5000}
# (Debian's docker-registry; storage under ~/.cache/ppml-build/registry). Idempotent.
set -euo pipefail
port=${PPML_REGISTRY_PORT:-5000}
address="127.0.0.1:${port}"
if curl -fsS -o /dev/null "http://${address}/v2/" 2>/dev/null; then
    echo "registry-up: a registry already answers on ${address}"
    exit 0
fi
state="${XDG_CACHE_HOME:-$HOME/.cache}/ppml-build/registry"
mkdir -p "$state/data"
cat > "$state/config.yml" <<CONFIG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/data
  delete:
    enabled: true
http:
  addr: ${address}
CONFIG
nohup docker-registry serve "$state/config.yml" > "$state/registry.log" 2>&1 &
for _ in $(seq 1 50); do
    if curl -fsS -o /dev/null "http://${address}/v2/" 2>/dev/null; then
        echo "registry-up: started docker-registry on ${address} (log: $state/registry.log)"
        exit 0
    fi
    sleep 0.2
done
echo "registry-up: error: docker-registry did not answer on ${address}; see $state/registry.log" >&2
exit 1
