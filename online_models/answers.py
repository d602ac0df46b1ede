"""What the API answers, as pure functions: the HTTP edge reads Redis and the clock, and these
turn what it read into the JSON bodies it serves (and the feedback envelopes it produces).

No clock and no randomness in here: the caller passes `now_ms`, nonces and seeds, so an
evaluator or a test gets the same bytes the API would serve.
"""

from __future__ import annotations

# How much of the popularity lists the API reads (and the evaluators index the same way).
STORE_LIST = 50
GLOBAL_LIST = 2000  # enough of the head to fill per-category lists
