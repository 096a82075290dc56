"""Run tags and sandbox metadata the launcher writes, namespaced like dagster-docker's `docker/...`."""

SANDBOX_ID_TAG = "e2b/sandbox_id"
SUPERVISOR_PID_TAG = "e2b/supervisor_pid"
# Sandbox metadata key: finds a run's sandbox with `Sandbox.list(query=SandboxQuery(metadata=...))`.
SANDBOX_METADATA_RUN_ID = "dagster_run_id"
# Sandbox metadata key: the id of the run storage that owns the run (`instance.run_storage.get_run_storage_id()`),
# so the reaper lists only its own instance's sandboxes in an E2B team shared with other instances.
SANDBOX_METADATA_RUN_STORAGE = "osiris/run_storage"
