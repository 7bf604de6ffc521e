"""Real servers the tests start on free loopback ports (each module: a session fixture)."""
