"""Run as a subprocess by test_migrations.py: one textback process starting up (build_context, which upgrades the
database under the migration lock), released at the same moment as its siblings by a file appearing.

Usage: python -m tests.migration_children DATABASE_URL BROKERS_FILE SPOOL_DIR GO_FILE
Prints one JSON line: {"upgrade": <what this process's upgrade did>, "brokers": <active brokers>}; a process
that found the database at head without the runner (service.migrations.head) reports it as an upgrade from head
that changed nothing, which is what the runner would have reported."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    url, brokers_file, spool_dir, go_file = sys.argv[1:5]
    from service import context  # lazy: imported before the start signal so every child is ready at once
    from service.migrations import runner
    from service.settings import Settings
    from tests.helpers import POLICIES, PUBLIC_URL

    done: list[runner.Upgrade] = []
    upgrade = runner.upgrade_database

    def recording(engine):  # the real upgrade, its result kept to print
        result = upgrade(engine)
        done.append(result)
        return result

    runner.upgrade_database = recording  # start-up imports it from the runner when there is work
    settings = Settings(_env_file=None, database_url=url, brokers_file=Path(brokers_file), policies_dir=POLICIES,
                        spool_dir=Path(spool_dir), public_url=PUBLIC_URL, run_worker=False)
    Path(f"{go_file}.ready.{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not Path(go_file).exists():
        if time.monotonic() > deadline:
            raise SystemExit("no start signal")
        time.sleep(0.005)
    ctx = context.build_context(settings)
    try:
        head = runner.head_revision()
        result = done[0] if done else runner.Upgrade(before=head, after=head)
        print(json.dumps({"upgrade": {"before": result.before, "after": result.after, "changed": result.changed,
                                      "changed_tables": len(result.changed_tables), "runner": bool(done)},
                          "brokers": len(ctx.brokers_by_number)}))
    finally:
        ctx.close()


if __name__ == "__main__":
    main()
