"""The engine's one error hierarchy; the CLI turns these into one-line messages."""


class EngineError(Exception):
    """Base of every error the engine raises on purpose (bad input, rejected model, ...)."""


class UsageError(EngineError):
    """The caller asked for something that cannot be done as asked (bad flags, missing file)."""


class PolicyError(UsageError):
    """A promotion policy (a file, a configuration block or command-line flags) is malformed."""


class FeatureCacheError(EngineError):
    """A feature cache (parquet) is missing, malformed or fails its schema."""


class RegistryError(EngineError):
    """A model registry cannot be read or does not validate."""


class ModelRejected(EngineError):
    """A model failed a safety or interface check, or produced unusable output."""


class BudgetExceeded(ModelRejected):
    """A model ran out of its memory or time budget: a fact about this run, not about the model.

    It fails the model's step like any rejection, but it is never stored as a result, so a
    re-run with a larger budget judges the model again.
    """


class EvidenceError(EngineError):
    """Evidence JSON (LOSO reports, a verdict, a manifest) is missing, malformed or self-contradictory."""


class ReportError(EngineError):
    """A report cannot be written or read."""


class MediaError(EngineError):
    """A video, a source manifest or the ffmpeg binary cannot be used as asked."""


def one_line(error: BaseException | str, *, limit: int = 200) -> str:
    """Collapse an error (or message) to one line of at most ``limit`` characters."""
    text = " ".join(str(error).split()) or (
        type(error).__name__ if isinstance(error, BaseException) else ""
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."
