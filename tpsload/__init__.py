"""tpsload: measures how fast an OpenAI-compatible LLM server really is under load."""

__version__ = "0.1.0"
