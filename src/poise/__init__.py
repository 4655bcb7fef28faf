"""poise: train models that stay robust and safe without giving up utility, and measure what it costs."""

__version__ = "0.1.0"
