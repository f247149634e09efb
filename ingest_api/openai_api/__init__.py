"""The OpenAI-compatible API: the same pipeline as the native API, in OpenAI's shapes."""
