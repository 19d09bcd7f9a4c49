"""JSON Schemas shipped with the engine (registry, reports, verdicts, manifests)."""
