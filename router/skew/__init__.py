"""Live training-serving skew monitoring: sketches of sampled features in the router, drift statistics."""
