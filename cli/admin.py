"""`vitals db migrate|app-role` and `vitals demo`: operating the installation."""

from __future__ import annotations

import argparse

from cli.output import Groups, emit, say
from core.errors import SettingsError
from core.settings import Settings


def cmd_db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from store.migrate import migrate

    applied = migrate(settings.require_database_url())
    say(f"applied {len(applied)} migration(s)" if applied else "database is up to date")
    emit({"applied": applied})
    return 0


def cmd_db_app_role(args: argparse.Namespace, settings: Settings) -> int:
    from store.migrate import APP_ROLE, enable_app_login

    if settings.app_database_password is None:
        raise SettingsError("VITALS_APP_DATABASE_PASSWORD is required")
    try:
        enable_app_login(
            settings.require_database_url(), settings.app_database_password.get_secret_value()
        )
    except ValueError as e:
        raise SettingsError(f"VITALS_APP_DATABASE_PASSWORD: {e}") from None
    say(f"role {APP_ROLE} may log in with VITALS_APP_DATABASE_PASSWORD")
    emit({"role": APP_ROLE, "login": True})
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from demo.extra import INSTALL_HINT, missing_dependencies

    missing = missing_dependencies()
    if missing:
        say(
            "vitals demo needs the optional `demo` dependencies "
            f"(not installed: {', '.join(missing)}): {INSTALL_HINT}"
        )
        return 2
    from demo.run import main as demo

    return demo(settings)


def register(sub: argparse._SubParsersAction, groups: Groups) -> None:
    db = groups.group("db", "database")
    db.add_parser("migrate", help="apply sql/ migrations").set_defaults(func=cmd_db_migrate)
    db.add_parser(
        "app-role",
        help="let the application role vitals_app log in with VITALS_APP_DATABASE_PASSWORD",
    ).set_defaults(func=cmd_db_app_role)

    p = sub.add_parser("demo", help="the whole pipeline on embedded defaults")
    p.set_defaults(func=cmd_demo)
