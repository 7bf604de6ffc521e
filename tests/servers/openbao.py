"""The real openbao server for tests: placeholder, filled in with a session fixture."""
