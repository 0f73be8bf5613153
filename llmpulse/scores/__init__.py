"""Late scores: the score path from message to window quality (docs/canary.md)."""
