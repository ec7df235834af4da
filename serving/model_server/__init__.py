"""`modelramp serve-model`: a TF Serving stand-in that loads SavedModels and serves TF Serving's APIs."""
