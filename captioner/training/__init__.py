"""Training: settings, inputs, the resumable loop and its step, fine-tuning, selection."""
