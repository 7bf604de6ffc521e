"""The real moto server for tests: placeholder, filled in with a session fixture."""
