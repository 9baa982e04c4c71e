"""Published (reported) numbers and the tables the demo writes; data, not code."""
