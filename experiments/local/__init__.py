"""The laptop stack: every process on loopback (`modelramp up`), the demo, and its simulated users."""
