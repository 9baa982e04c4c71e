"""Protocol files (TOML) and the official sample lists they need; data, not code."""
