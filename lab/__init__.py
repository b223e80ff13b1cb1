"""What is not run on a device or an edge: the simulator and experiments, the system demo, a
private Mosquitto for the demo, benchmarks and tests."""
