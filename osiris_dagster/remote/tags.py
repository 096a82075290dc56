"""Run tags and sandbox metadata the launcher writes, namespaced like dagster-docker's `docker/...`."""

SANDBOX_ID_TAG = "e2b/sandbox_id"
SUPERVISOR_PID_TAG = "e2b/supervisor_pid"
# Sandbox metadata key: finds a run's sandbox with `Sandbox.list(query=SandboxQuery(metadata=...))`.
SANDBOX_METADATA_RUN_ID = "dagster_run_id"
