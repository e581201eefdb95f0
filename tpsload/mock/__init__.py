"""The bundled OpenAI-compatible mock server (`tpsload mock`) and the lean bench server.

Only the launcher is imported here: the servers (aiohttp.web) load in their own process.
"""

from tpsload.mock.launch import MockProcess

__all__ = ["MockProcess"]
