"""The real chroma server for tests: placeholder, filled in with a session fixture."""
