"""Validation: the Great Expectations suites run on the ingested tables (GX's engine, or the opt-in Arrow one), rows
quarantined with their reasons, counts reconciled."""
