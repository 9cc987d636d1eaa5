"""Models: the encoders, soft attention, the attention decoder and the captioning model."""
