"""What can go wrong with a session, one class per answer the caller gives (the HTTP routes map them
to status codes in ``routes_logic.http_status``). Every message says what happened and what to do."""

from __future__ import annotations


class SessionError(ValueError):
    """A session operation that cannot be done; the session is unchanged."""


class InvalidSessionId(SessionError):
    """A session id with characters that could escape the sessions folder, or none at all."""


class SessionNotFound(SessionError):
    pass


class TurnNotFound(SessionError):
    """Rollback to a turn or step that does not exist (or whose image was pruned)."""


class ArtifactNotFound(SessionError):
    """An artifact id that is not in this session (artifacts of other sessions are never visible)."""


class NothingToUndo(SessionError):
    pass


class NothingToRedo(SessionError):
    pass


class SessionBusy(SessionError):
    """Another client is editing the session, or the database stayed locked past the busy timeout."""


class TurnExpired(SessionError):
    """The turn's lease ended and another client took the session; the run folder is kept."""


class TurnIncomplete(SessionError):
    """The run folder does not hold a finished run (no result, a step not run, a broken record)."""


class SessionStorageError(SessionError):
    """The disk is full or unwritable, or the database cannot be read."""


class SessionSchemaError(SessionError):
    """The database was written by a newer version of the pack, or is not a sessions database."""
