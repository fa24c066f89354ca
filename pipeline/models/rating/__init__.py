"""The rating model: its Keras architectures, Keras' fit (batches, training step, sparse optimizers, learning-rate
functions, initializers) and the ALS option."""
