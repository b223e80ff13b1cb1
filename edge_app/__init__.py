"""The edge: runs the tails of a bundle for the devices that offload to it (TensorFlow)."""
