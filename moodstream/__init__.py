"""moodstream: the ``moodstream`` command (``moodstream listen ...``); the code lives in realtime, models, train, bench."""
