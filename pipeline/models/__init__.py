"""The two models learned from the matrix: `rating` (predicts a rating, trained by Keras) and `ranking` (makes the
top-10 lists, EASE)."""
