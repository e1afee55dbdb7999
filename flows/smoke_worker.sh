#!/usr/bin/env bash
# Loopback check of the deployment path: a Prefect server on 127.0.0.1, a *process* work pool, the
# flow deployed from this checkout, one run picked up by `prefect worker start --run-once`.
# Runs the whole pipeline on tests/data/params.tiny.yaml in a temp copy (tiny models only).
#   bash flows/smoke_worker.sh                     # ~1.5 min on 2 CPU cores; exit 0 = the flow run COMPLETED
#   STOP_AFTER=render bash flows/smoke_worker.sh   # the deployment path only, through the first 3 stages
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
PORT=${PORT:-4299}
STOP_AFTER=${STOP_AFTER:-}
POOL=ocrmem-smoke
export PREFECT_HOME="$WORK/prefect-home" PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1 WANDB_MODE=disabled

prefect server start --host 127.0.0.1 --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 90); do curl -sf "$PREFECT_API_URL/health" >/dev/null && break; sleep 1; done
curl -sf "$PREFECT_API_URL/health" >/dev/null || { cat "$WORK/server.log"; exit 1; }

# the pipeline's files + tiny params, as the DVC e2e test lays them out: a DVC repo (the flow runs
# `dvc repro` per stage), tiny stand-in models only
mkdir -p "$WORK/repo"
cp -r "$REPO/ocrmem" "$REPO/flows" "$REPO/configs" "$REPO/dvc.yaml" "$WORK/repo/"
cp "$REPO/tests/data/params.tiny.yaml" "$WORK/repo/params.yaml"
sed -i 's/ocrmem standins --out models$/ocrmem standins --out models --no-smollm2/' "$WORK/repo/dvc.yaml"
(cd "$WORK/repo" && git init -q && dvc init -q)

prefect work-pool create "$POOL" --type process --overwrite >/dev/null
cd "$WORK/repo"
python - "$POOL" "$WORK/repo" "$STOP_AFTER" <<'PY'
import sys
from prefect import flow
pool, repo, stop_after = sys.argv[1:]
flow.from_source(source=repo, entrypoint="flows/pipeline.py:ocrmem_pipeline").deploy(
    name="smoke", work_pool_name=pool,
    parameters={"workdir": repo, "stop_after": stop_after or None},
    print_next_steps=False,
)
PY
prefect deployment run ocrmem-pipeline/smoke >"$WORK/run.log"
RUN_ID=$(grep -oE '[0-9a-f]{8}-[0-9a-f-]{27}' "$WORK/run.log" | head -1)
prefect worker start --pool "$POOL" --run-once
STATE=$(python -c "
import asyncio, sys
from prefect.client.orchestration import get_client
async def main():
    async with get_client() as c:
        return (await c.read_flow_run('$RUN_ID')).state.type.value
print(asyncio.run(main()))")
echo "flow run $RUN_ID: $STATE"
[ "$STATE" = COMPLETED ]
