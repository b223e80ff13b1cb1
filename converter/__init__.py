"""Detector -> per-split TFLite heads, edge tails and a manifest (needs TensorFlow; never imported on the device)."""
