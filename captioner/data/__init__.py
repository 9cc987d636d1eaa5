"""Data: dataset readers, the synthetic generator, images, vocabulary, feature cache, batches."""
