"""captioner: Show, Attend and Tell image captioning with Keras 3 on TensorFlow."""

__version__ = "0.1.0"
