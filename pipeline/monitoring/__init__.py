"""Monitoring between retrains: the data set's champion scored on the ratings it never saw, and the new data's
drift from the data it learned from (Evidently), measured before a new version is trained."""
