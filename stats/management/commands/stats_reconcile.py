"""manage.py stats_reconcile [--fix]: compare every rollup with a recount of the messages."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from stats.selectors import RollupDifference, rollups_differences
from stats.services.reconcile import rollups_fix

# Enough to see what kind of drift it is; the count says how much.
_SHOWN_PER_TABLE = 20


class Command(BaseCommand):
    help = (
        "Recompute every rollup from the message table and print the differences; exit status 1 when there "
        "are any. With --fix, repair them (drains and erasures wait while it runs; writes are still accepted)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fix", action="store_true", help="repair the rollups that differ")

    def handle(self, *args: Any, fix: bool = False, **options: Any) -> None:
        differences = rollups_fix() if fix else rollups_differences()
        if not differences:
            self.stdout.write("Rollups match a recount of the messages.")
            return
        self._print(differences)
        if fix:
            self.stdout.write(self.style.WARNING(f"Repaired {len(differences)} differences."))
            return
        raise CommandError(f"{len(differences)} differences; run with --fix to repair them.", returncode=1)

    def _print(self, differences: list[RollupDifference]) -> None:
        shown: dict[str, int] = {}
        for difference in differences:
            shown[difference.table] = shown.get(difference.table, 0) + 1
            if shown[difference.table] <= _SHOWN_PER_TABLE:
                self.stdout.write(str(difference))
        for table, count in shown.items():
            if count > _SHOWN_PER_TABLE:
                self.stdout.write(f"{table}: {count - _SHOWN_PER_TABLE} more differences not shown")
