"""The live experiment: history, analysis, the ramp controller, its data sources and weight stores."""
