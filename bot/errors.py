"""The App's error hierarchy; each error becomes one log line or one user-visible sentence."""


class BotError(Exception):
    """Base of every error the App raises on purpose."""


class SettingsError(BotError):
    """The service's environment is missing or malformed; the service refuses to start."""
