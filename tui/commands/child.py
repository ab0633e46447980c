"""``python -m sgdwalk.tui.commands.child``: the trainer child a dashboard (or ``--nproc``) starts.

It reads the config its parent claimed from the environment (``trainer.claimed_config``) and
trains headless into the claimed session; under torchrun every rank runs it, and rank 0 alone
writes and prints. Errors end it as they end any command: one line, and the exit code.
"""

from __future__ import annotations

import sys

from sgdwalk.errors import UsageError
from sgdwalk.tui.text import guarded


def main() -> None:
    def train() -> int:
        from sgdwalk.tui.commands.headless import run_headless
        from sgdwalk.tui.commands.trainer import claimed_config

        cfg = claimed_config()
        if cfg is None:
            raise UsageError("the trainer child starts from `sgdwalk run`, not by hand")
        return run_headless(cfg, claimed=True)

    sys.exit(guarded(train))


if __name__ == "__main__":
    main()
