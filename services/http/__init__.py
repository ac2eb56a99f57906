"""The HTTP door: OpenAI- and Anthropic-compatible endpoints that call ``llm.v1.*`` over NATS."""
