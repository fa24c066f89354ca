"""Bench work run in child processes of their own (their own peak RSS), each printing its result as JSON."""
