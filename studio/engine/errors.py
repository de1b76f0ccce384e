"""The project's exception: every error a user can fix is a ``StudioError``.

``StudioError`` subclasses ``ValueError``, so code written against the engine's
documented "raises ValueError" keeps working; catch ``StudioError`` to tell the
studio's own, actionable messages apart from bugs.
"""

from __future__ import annotations


class StudioError(ValueError):
    """Wrong input, or a file or model the studio cannot use; the message says what to do."""
