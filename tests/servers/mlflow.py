"""The real mlflow server for tests: placeholder, filled in with a session fixture."""
