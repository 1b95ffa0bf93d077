"""The one exception opik_otel lets reach the application: a set-up that cannot work."""


class ConfigurationError(ValueError):
    """The Opik settings cannot work; the message says what is wrong and how to fix it."""
