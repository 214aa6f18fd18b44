"""eva-llm."""
