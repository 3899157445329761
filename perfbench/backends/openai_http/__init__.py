"""Servers over HTTP: OpenAI-compatible, Ollama native, llama.cpp native (docs/serving.md)."""
