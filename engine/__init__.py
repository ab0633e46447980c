"""sgdwalk's engine: training, landscape measurements and the session store.

Importing ``engine`` is cheap and pulls in neither torch nor any UI library: the records and the
session reader are plain Python (``from sgdwalk import open_session``); the training pieces load
torch on first use.
"""

from sgdwalk.records import (
    Alignment,
    CurvatureMeasured,
    EpochEnded,
    EventLogged,
    PhaseProgressed,
    StepMeasured,
)
from sgdwalk.session import Session, SessionError, list_sessions, open_session

__all__ = [
    "Alignment",
    "CurvatureMeasured",
    "EpochEnded",
    "EventLogged",
    "PhaseProgressed",
    "Session",
    "SessionError",
    "StepMeasured",
    "list_sessions",
    "open_session",
    "prepare",
]


def __getattr__(name: str):
    if name == "prepare":
        from sgdwalk.train import prepare

        return prepare
    raise AttributeError(name)
