"""model-guard GitHub App (filled by the GitHub App service issue)."""
