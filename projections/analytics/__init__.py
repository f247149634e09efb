"""Analytics consumers of the log: live figures (`steno analytics`) and the Parquet export (`steno export`)."""
