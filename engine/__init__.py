"""sgdwalk: watch SGD walk the loss surface of your network.

``import sgdwalk`` is cheap and pulls in neither torch nor any UI library: the records, the errors
and the session reader are plain Python (``sgdwalk.open_session("NAME")``); the training pieces
load torch on first use.
"""

from sgdwalk.errors import (
    ConfigError,
    DataError,
    SessionError,
    SgdwalkError,
    StorageError,
    UsageError,
)
from sgdwalk.records import (
    Alignment,
    CurvatureMeasured,
    EpochEnded,
    EventLogged,
    PhaseProgressed,
    Record,
    StepMeasured,
)
from sgdwalk.session import Session, list_sessions, open_session

__all__ = [
    "Alignment",
    "ConfigError",
    "CurvatureMeasured",
    "DataError",
    "EpochEnded",
    "EventLogged",
    "PhaseProgressed",
    "Record",
    "Session",
    "SessionError",
    "SgdwalkError",
    "StepMeasured",
    "StorageError",
    "UsageError",
    "list_sessions",
    "open_session",
    "prepare",
    "Walker",
]


def __getattr__(name: str):  # noqa: ANN202
    if name == "prepare":
        from sgdwalk.train import prepare

        return prepare
    if name == "Walker":  # loads torch: only when asked for
        from sgdwalk.walker import Walker

        return Walker
    raise AttributeError(name)
