from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tasks import auth
from tasks.models import ApiToken


class Command(BaseCommand):
    help = "Create, list or revoke API tokens for the jobs API (only a digest of each token is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser(
            "create",
            help="create a token and print it once",
            description="For example: api_token create ci --scope import --scope read --expires-in-days 90",
        )
        create.add_argument("name")
        create.add_argument(
            "--scope",
            dest="scopes",
            action="append",
            choices=ApiToken.Scope.values,
            required=True,
            help="what the token may do; repeat for several (admin: everything, on every job)",
        )
        create.add_argument("--expires-in-days", type=int, help="refused after this many days (default: never)")
        actions.add_parser("revoke", help="revoke a token").add_argument("name")
        actions.add_parser("list", help="list tokens")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "create":
            if ApiToken.objects.filter(name=options["name"]).exists():
                raise CommandError(f"A token named {options['name']!r} exists already.")
            days = options["expires_in_days"]
            if days is not None and days < 1:
                raise CommandError("--expires-in-days must be 1 or more.")
            expires_at = timezone.now() + timedelta(days=days) if days is not None else None
            _, raw = auth.api_token_create(options["name"], options["scopes"], expires_at)
            self.stdout.write(raw)
        elif action == "revoke":
            if not auth.api_token_revoke(options["name"]):
                raise CommandError(f"No active token named {options['name']!r}.")
            self.stdout.write(f"Revoked {options['name']}.")
        else:
            now = timezone.now()
            for token in ApiToken.objects.order_by("name"):
                state = "revoked" if not token.is_active else "expired" if token.expired(now) else "active"
                expires = f"expires {token.expires_at:%Y-%m-%d %H:%M}Z" if token.expires_at else "no expiry"
                self.stdout.write(
                    f"{token.name}\t{token.prefix}…\t{state}\t{','.join(token.scopes)}\t{expires}"
                    f"\tlast used {token.last_used_at or 'never'}"
                )
