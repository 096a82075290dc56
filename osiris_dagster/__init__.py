"""osiris-dagster: OML pipelines as Dagster assets, run locally or in E2B sandboxes."""
