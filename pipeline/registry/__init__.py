"""The MLflow model registry: the pure promotion rule, registration with aliases and tags, every version compared."""
