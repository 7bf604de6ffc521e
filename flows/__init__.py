"""Prefect flows: the playbook runner and the in-process runtime that executes it."""
