"""merbench tests (a package so test modules can share their data builders)."""
