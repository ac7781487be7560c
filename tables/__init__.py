"""Faust tables and the mirror of their counts into Redis."""
