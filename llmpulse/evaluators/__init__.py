"""Online evaluators: scores computed from a call's own text, and an LLM judge."""
