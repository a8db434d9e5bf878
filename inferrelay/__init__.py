"""inferrelay: one OpenAI-compatible endpoint that keeps answering."""

__version__ = "0.1.0"
