"""The LLM annotator: prompts, answer parsing, confidence, calibration and cost (pure), and the client."""
