"""Model quality before and beside the experiment: the offline gate, slices, problem patterns, tracking."""
