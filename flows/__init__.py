"""Prefect flows: thin wiring of the `pipeline` stages (retrain, sweep), the scheduled deployment and the
`animerec` command line."""
