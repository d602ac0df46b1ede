"""The HTTP edge: reads Redis in one round trip per request and calls pure ranking code."""
