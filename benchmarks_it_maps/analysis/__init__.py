"""Analyses across many runs: the public leaderboard and the accuracy / IT trade-off."""
