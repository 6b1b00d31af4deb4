"""Running trained models: the ``eval``, ``predict`` (images and video) and ``demo`` commands."""
