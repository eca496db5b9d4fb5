"""manage.py deadletters list|replay|purge: the staged messages no drain could store."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from messages.selectors import dead_letters_list
from messages.services import dead_letters_purge, dead_letters_replay


class Command(BaseCommand):
    help = (
        "Dead letters: staged messages no drain could store (malformed, or refused by PostgreSQL). "
        "'list' shows entry id, message id, age and reason (--show adds the message's fields: personal "
        "data); 'replay' puts them back on the staging stream once the cause is fixed (stored once, "
        "however often replayed); 'purge' deletes them for good (--id, or --all --yes)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["list", "replay", "purge"])
        parser.add_argument(
            "--id", action="append", dest="ids", metavar="ENTRY_ID", help="only this entry (repeatable)"
        )
        parser.add_argument("--all", action="store_true", help="purge: every dead letter")
        parser.add_argument("--yes", action="store_true", help="purge --all: no second thoughts")
        parser.add_argument("--show", action="store_true", help="list: include the message's fields")
        parser.add_argument("--limit", type=int, default=None, help="list: at most this many")

    def handle(self, *args: Any, action: str, ids: list[str] | None, **options: Any) -> None:
        if action == "list":
            self._list(show=options["show"], limit=options["limit"])
        elif action == "replay":
            moved = dead_letters_replay(ids)
            self.stdout.write(f"Replayed {moved} dead letters onto the staging stream.")
        else:
            if not ids and not (options["all"] and options["yes"]):
                raise CommandError("purge deletes messages for good: name them with --id, or pass --all --yes.")
            purged = dead_letters_purge(ids)
            self.stdout.write(f"Purged {purged} dead letters.")

    def _list(self, *, show: bool, limit: int | None) -> None:
        count = 0
        for row in dead_letters_list(show=show, limit=limit):
            count += 1
            line = f"{row['entry']}  id={row['id'] or '-'}  age={row['age_seconds']}s  reason={row['reason']}"
            self.stdout.write(line + (f"\n    {row['payload']}" if show else ""))
        self.stdout.write(f"{count} dead letters listed.")
