"""Data: the rating files of a data set found, read into typed Arrow tables, the inbox merged and archived; the built-
in demo data."""
