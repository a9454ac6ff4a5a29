"""What a user prefers, learned from feedback.

``events`` (the feedback event types and their observations), ``resolve`` (events checked and
turned into observations), ``model`` (the particle posterior and the one forgetting rule),
``state`` (a user's grouped evidence: fading, tempering, the ``max_step`` bound) and ``cues``
(the lexicon of preference cues in a user's message). Import from the modules themselves.
"""
