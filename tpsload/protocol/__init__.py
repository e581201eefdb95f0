"""Wire formats, pure: SSE bytes in, events out (sse), and the OpenAI request/response shapes (openai)."""
