"""The ``enroll-sync`` command: serve, worker, db, demo, sandbox, import, users, plugins."""
from __future__ import annotations

import json
import sys

import click


def _app(**overrides):
    from . import create_app
    return create_app(overrides or None)


@click.group()
@click.version_option(package_name="enroll-sync")
def cli():
    """Enroll Sync: approved registrations from Enroll into your SIS."""


# --------------------------------------------------------------------------- db

@cli.group()
def db():
    """Database schema."""


@db.command("upgrade")
def db_upgrade():
    """Apply pending numbered migrations."""
    from .db import database
    from .migrations import upgrade
    app = _app()
    with app.app_context(), database.connection_context():
        ran = upgrade()
    click.echo("Applied: " + ", ".join(ran) if ran else "The database is up to date.")


# --------------------------------------------------------------------------- demo

@cli.command()
@click.option("--registrations", default=320, show_default=True, help="How many registrations to create.")
@click.option("--sandbox-url", "sandbox_urls", multiple=True, metavar="NAME=URL",
              help="Where a demo sandbox SIS listens, e.g. powerschool=http://127.0.0.1:5001.")
def demo(registrations, sandbox_urls):
    """Load the demo district once (a second run keeps what an admin changed)."""
    from .db import database
    from .demo import DEMO_PASSWORD, DEMO_USERS, load_demo
    from .migrations import upgrade
    app = _app()
    urls = {"powerschool": app.config["SANDBOX_POWERSCHOOL_URL"]}
    for item in sandbox_urls:
        name, _, url = item.partition("=")
        if not url:
            raise click.BadParameter(f"expected NAME=URL, got {item!r}", param_hint="--sandbox-url")
        urls[name] = url
    with app.app_context(), database.connection_context():
        upgrade()
        created, org = load_demo(app.extensions["enroll_sync.plugins"], urls, registrations)
    click.echo(("Loaded" if created else "Kept the existing") + f" demo district: {org.name}.")
    click.echo(f"Demo sign-ins (password: {DEMO_PASSWORD}):")
    for role, email, _name in DEMO_USERS:
        click.echo(f"  {role:<15} {email}")


# --------------------------------------------------------------------------- serve and worker

@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="Request threads of the web server (default ENROLL_SYNC_WEB_THREADS, 8).")
@click.option("--debug", is_flag=True,
              help="Werkzeug's development server, reloading on code changes (development only).")
def serve(host, port, threads, debug):
    """Serve the web app with a production WSGI server (waitress) and, by default, an
    in-process sync worker. Put it behind a reverse proxy for TLS (docs/configuration.md)."""
    app = _app()
    consumer = None
    if app.config["IN_PROCESS_WORKER"]:
        from .sync.queue import start_in_process_consumer
        consumer = start_in_process_consumer(app)
    threads = threads or max(1, app.config["WEB_THREADS"])
    click.echo(f"Enroll Sync on http://{host}:{port}/ ({'development server' if debug else f'{threads} threads'})")
    try:
        if debug:
            from werkzeug.serving import run_simple
            run_simple(host, port, app, threaded=True, use_reloader=True, use_debugger=False)
        else:
            from waitress import serve as waitress_serve
            # forwarded headers are handled by the app itself (ENROLL_SYNC_TRUSTED_PROXIES)
            waitress_serve(app, host=host, port=port, threads=threads, ident="Enroll Sync",
                           connection_limit=max(100, threads * 16), channel_timeout=120)
    finally:
        if consumer is not None:
            consumer.stop()


@cli.command()
@click.option("--workers", type=int, default=None, help="Consumer threads (default ENROLL_SYNC_WORKERS).")
def worker(workers):
    """Run a sync worker process (huey consumer) until stopped."""
    from .sync.queue import run_worker
    run_worker(_app(), workers)


# --------------------------------------------------------------------------- sandbox (plugins add commands)

@cli.group()
def sandbox():
    """Test SIS servers provided by installed adapters."""


# --------------------------------------------------------------------------- import

@cli.group(name="import")
def import_():
    """Import data from files."""


@import_.command("registrations")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--org", "org_slug", default=None, help="Organization slug (default: the only one).")
def import_registrations_cmd(path, org_slug):
    """Import registrations from a CSV whose header row holds field keys."""
    from .db import database
    from .importer import import_registrations
    from .models import Organization
    app = _app()
    with app.app_context(), database.connection_context():
        org = _one_org(Organization, org_slug)
        try:
            with open(path, encoding="utf-8", newline="") as fh:
                text = fh.read()
        except UnicodeDecodeError:
            raise click.ClickException(f"{path} is not UTF-8 text. Save it as CSV UTF-8 and try again.")
        report = import_registrations(org, text)
    if not report.ok:
        for line, reason in report.errors:
            click.echo(f"{path}:{line}: {reason}", err=True)
        raise click.ClickException(f"Nothing was imported: {len(report.errors)} problem(s) in {path}.")
    click.echo(f"Imported {report.imported} registration(s) into {org.name}.")


def _one_org(Organization, slug):
    if slug:
        org = Organization.get_or_none(Organization.slug == slug)
        if org is None:
            raise click.ClickException(f"No organization with slug {slug!r}.")
        return org
    orgs = list(Organization.select().limit(2))
    if len(orgs) != 1:
        raise click.ClickException("Name the organization with --org SLUG." if orgs else "There is no organization yet; run `enroll-sync demo` or `enroll-sync users create`.")
    return orgs[0]


# --------------------------------------------------------------------------- users

@cli.group()
def users():
    """Accounts."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--role", required=True, type=click.Choice(["District Admin", "Sync Admin", "Registrar", "Viewer"]),
              help="The preset of permissions to grant (change them later under Settings > Users).")
@click.option("--org", "org_slug", required=True, help="Organization slug (created when new).")
@click.password_option()
def users_create(email, name, role, org_slug, password):
    """Create a user (and the organization when it does not exist)."""
    from werkzeug.security import generate_password_hash

    from .catalog import install_catalog
    from .db import database
    from .migrations import upgrade
    from .models import Organization, User
    if len(password) < 10:
        raise click.BadParameter("use at least 10 characters", param_hint="password")
    app = _app()
    with app.app_context(), database.connection_context(), database.atomic():
        upgrade()
        org = Organization.get_or_none(Organization.slug == org_slug)
        if org is None:
            org = Organization.create(name=org_slug, slug=org_slug)
            install_catalog(org)
        if User.select().where((User.email == email.lower()) & (User.organization == org)).exists():
            raise click.ClickException(f"{email} already has an account in {org.name}.")
        User.create(organization=org, email=email.lower(), name=name, role=role,
                    password_hash=generate_password_hash(password))
    click.echo(f"Created {email} ({role}) in {org.name}.")


# --------------------------------------------------------------------------- organizations

@cli.group()
def org():
    """Organization settings."""


@org.command("registration-module")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--org", "org_slug", default=None, help="Organization slug (default: the only one).")
def org_registration_module(state, org_slug):
    """Whether the district uses Enroll's Registration module (exporting needs it)."""
    from .db import database
    from .models import Organization
    app = _app()
    with app.app_context(), database.connection_context():
        organization = _one_org(Organization, org_slug)
        organization.uses_registration_module = state == "on"
        organization.save()
    click.echo(f"{organization.name}: Registration module {state}.")


# --------------------------------------------------------------------------- plugins

@cli.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json):
    """List loaded plugins with their versions and hooks."""
    from .plugins import plugin_descriptions
    app = _app()
    rows = plugin_descriptions(app.extensions["enroll_sync.plugins"])
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        version = f" {row['version']}" if row["version"] else ""
        dist = f" ({row['distribution']}{version})" if row["distribution"] else ""
        click.echo(f"{row['name']}{dist}: {', '.join(row['hooks'])}")


def _install_plugin_commands():
    """Let installed plugins add sandbox commands. Built on a light plugin manager (no app)."""
    from .plugins import build_plugin_manager
    try:
        pm = build_plugin_manager()
    except Exception as exc:  # a broken plugin must not break the whole CLI
        click.echo(f"warning: plugins failed to load: {exc}", err=True)
        return
    pm.hook.register_sandbox_commands(sandbox=sandbox)


def main(argv=None):
    _install_plugin_commands()
    return cli.main(args=argv, prog_name="enroll-sync")


if __name__ == "__main__":
    sys.exit(main())
