"""The bundled OpenAI-compatible mock server (`tpsload mock`)."""

from .launch import MockProcess
from .server import MockConfig

__all__ = ["MockConfig", "MockProcess"]
