"""The utility matrix: accepted ratings as long Parquet splits with id maps, never dense."""
