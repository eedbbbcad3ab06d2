"""Helpers that tests in several directories share (the test directories mirror the package; these do not)."""
