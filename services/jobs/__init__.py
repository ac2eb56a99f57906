"""Background-job workers: drain the JOBS work queue through the guard, record results in KV."""
