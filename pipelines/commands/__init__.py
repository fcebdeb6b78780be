"""The click commands, one module per area; `pipelines.cli` adds them to the group explicitly."""
