"""From the churn data set to an exported SavedModel and the records beside it (`modelramp train`)."""
