"""JSON Schemas shipped with the App (the per-repository configuration), a copy of config/."""
