from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks import auth
from tasks.models import ApiToken


class Command(BaseCommand):
    help = "Create, list or revoke API tokens for the jobs API (only a digest of each token is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("create", help="create a token and print it once").add_argument("name")
        actions.add_parser("revoke", help="revoke a token").add_argument("name")
        actions.add_parser("list", help="list tokens")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "create":
            if ApiToken.objects.filter(name=options["name"]).exists():
                raise CommandError(f"A token named {options['name']!r} exists already.")
            _, raw = auth.api_token_create(options["name"])
            self.stdout.write(raw)
        elif action == "revoke":
            if not auth.api_token_revoke(options["name"]):
                raise CommandError(f"No active token named {options['name']!r}.")
            self.stdout.write(f"Revoked {options['name']}.")
        else:
            for token in ApiToken.objects.order_by("name"):
                state = "active" if token.is_active else "revoked"
                self.stdout.write(f"{token.name}\t{token.prefix}…\t{state}\tlast used {token.last_used_at or 'never'}")
