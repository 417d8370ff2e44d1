"""Mindprint: turn a small or mid-size LLM into a person's voice."""

__version__ = "0.1.0"
