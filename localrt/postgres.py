"""A private PostgreSQL cluster for development and tests (never used on Cloudflare).

    cluster = PgCluster(data_dir=Path(".local/pg"), port=54329)
    cluster.start()              # initdb on first use (reused after), pg_ctl start, create db
    cluster.apply_migrations()   # localrt/sql/supabase_compat.sql, then supabase/migrations/*.sql
                                 # in order; tracked, idempotent
    cluster.seed()               # supabase/seed.sql (idempotent upserts)
    cluster.dsn                  # postgresql://postgres:…@127.0.0.1:54329/cmgsite  (superuser)
    cluster.authenticator_dsn    # what PostgREST logs in with
    cluster.stop()               # pg_ctl stop -m fast

CLI: `python -m localrt.postgres start|stop|migrate|seed|status --data-dir D --port P`
(`start` also migrates and seeds unless `--no-migrate`).

The server listens on 127.0.0.1 only; its unix socket lives in a private directory. Local
socket connections are trusted, TCP ones need the passwords that initdb time generates
and keeps in `<data-dir>/cmgsite-localrt.json` (mode 0600, never committed).

initdb and postgres refuse to run as root: as root we run them as the Debian package's
`postgres` system user (created if missing) through `runuser`, and chown the data dir.

The schema is laid out as the Supabase CLI expects (`supabase db push` sends the same
files): `supabase/migrations/<14-digit timestamp>_<name>.sql`, `supabase/seed.sql`. What a
hosted Supabase database already has (the API roles, the `auth` schema's functions) is in
`localrt/sql/supabase_compat.sql`, outside what is pushed, and is applied here first. The
files were once `migrations/supabase/NNNN_name.sql`; a local state that recorded those names
has them renamed in its ledger (LEGACY_NAMES), so nothing is applied twice.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import pwd
import re
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parent.parent
SUPABASE_DIR = REPO_ROOT / "supabase"  # the Supabase CLI's project directory
MIGRATIONS_DIR = SUPABASE_DIR / "migrations"
SEED_FILE = SUPABASE_DIR / "seed.sql"
# Only for a plain PostgreSQL (hosted Supabase has it already): never under supabase/.
COMPAT_FILE = REPO_ROOT / "localrt" / "sql" / "supabase_compat.sql"
# The Supabase CLI's migration file name: a 14-digit UTC timestamp, an underscore, a name.
MIGRATION_NAME = re.compile(r"^\d{14}_[a-z0-9_]+\.sql$")
# Ledger names recorded before the Supabase CLI layout (migrations/supabase/NNNN_name.sql),
# mapped to today's names. The files moved unchanged, so their recorded sha256 still holds.
LEGACY_NAMES: dict[str, str] = {
    "0000_supabase_compat.sql": "supabase_compat.sql",
    "0001_tenancy_schema.sql": "20261126154046_tenancy_schema.sql",
    "0002_platform_domains.sql": "20261126162328_platform_domains.sql",
    "0003_profile_email.sql": "20261126162550_profile_email.sql",
    "0004_usage_history.sql": "20261126230329_usage_history.sql",
    "0005_api_request_guard.sql": "20261126230448_api_request_guard.sql",
    "0006_domain_rules.sql": "20261126232039_domain_rules.sql",
    "0007_integration_credentials.sql": "20261126233102_integration_credentials.sql",
    "0008_audit_chain.sql": "20261126233134_audit_chain.sql",
    "0009_operations.sql": "20261126235519_operations.sql",
}
SECRETS_FILE = "cmgsite-localrt.json"
SERVICE_USER = "postgres"  # the Debian package's system user
_MAX_SOCKET_DIR = 80  # unix socket paths are limited to ~107 bytes including the file name


class PostgresSetupError(RuntimeError):
    """The local PostgreSQL cannot be found, initialised or started."""


def find_pg_bin() -> Path:
    """The newest /usr/lib/postgresql/*/bin holding initdb (or $PG_BIN)."""
    override = os.environ.get("PG_BIN")
    candidates = (
        [override]
        if override
        else sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
            reverse=True,
        )
    )
    for cand in candidates:
        if cand and (Path(cand) / "initdb").is_file() and (Path(cand) / "pg_ctl").is_file():
            return Path(cand)
    raise PostgresSetupError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin). "
        "Run scripts/bootstrap.sh, which installs them with `apt-get install -y postgresql`, "
        "or set PG_BIN to a directory holding initdb and pg_ctl."
    )


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """The timestamped schema migrations in apply order (as `supabase db push` orders them)."""
    return sorted(p for p in directory.glob("*.sql") if p.name[:1].isdigit())


def _ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


@dataclass
class PgCluster:
    """One PostgreSQL cluster in `data_dir`, served on 127.0.0.1:`port`."""

    data_dir: Path
    port: int
    dbname: str = "cmgsite"
    fast: bool = False  # fsync off etc.: for throwaway test and benchmark clusters only
    socket_dir: Path | None = None
    _secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.bin = find_pg_bin()

    # ---- connection strings -------------------------------------------------------------
    @property
    def superuser_password(self) -> str:
        return self._load_secrets()["superuser_password"]

    @property
    def authenticator_password(self) -> str:
        return self._load_secrets()["authenticator_password"]

    @property
    def dsn(self) -> str:
        """Superuser DSN over loopback TCP (owner of every object; bypasses RLS)."""
        return f"postgresql://postgres:{self.superuser_password}@127.0.0.1:{self.port}/{self.dbname}"

    @property
    def authenticator_dsn(self) -> str:
        """The login PostgREST uses; it can only switch to anon/authenticated/service_role."""
        return f"postgresql://authenticator:{self.authenticator_password}@127.0.0.1:{self.port}/{self.dbname}"

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=autocommit)

    # ---- lifecycle ----------------------------------------------------------------------
    def init(self) -> None:
        """initdb once; an existing cluster in data_dir is reused as is."""
        if (self.data_dir / "PG_VERSION").is_file():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if any(self.data_dir.iterdir()):
            raise PostgresSetupError(f"{self.data_dir} is not empty and holds no PostgreSQL cluster")
        self._own(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        secrets_ = {
            "superuser_password": secrets.token_urlsafe(24),
            "authenticator_password": secrets.token_urlsafe(24),
        }
        with tempfile.NamedTemporaryFile("w", delete=False, prefix="pgpw-") as pw:
            pw.write(secrets_["superuser_password"] + "\n")
        self._own(Path(pw.name))
        try:
            self._run_as_service(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--pwfile",
                    pw.name,
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ],
            )
        finally:
            os.unlink(pw.name)
        secrets_path = self.data_dir / SECRETS_FILE
        secrets_path.write_text(json.dumps(secrets_))
        os.chmod(secrets_path, 0o600)
        self._own(secrets_path)
        self._secrets = secrets_

    def start(self) -> None:
        """initdb if needed, start the server (waits until it accepts connections), create db."""
        self.init()
        if self.is_running():
            self._create_database()
            return
        if self.socket_dir is None:
            sock = self.data_dir.parent / f".s-{self.data_dir.name}"
            self.socket_dir = sock if len(str(sock)) <= _MAX_SOCKET_DIR else Path(tempfile.mkdtemp(prefix="pgsock-"))
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._own(self.socket_dir)
        os.chmod(self.socket_dir, 0o700)
        opts = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
        if self.fast:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log = self.data_dir / "server.log"
        try:
            self._run_as_service(
                [
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    opts,
                    "start",
                ],
            )
        except PostgresSetupError as exc:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresSetupError(f"{exc}\n--- server.log ---\n{tail}") from None
        self._create_database()

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions); a no-op when not running."""
        if not (self.data_dir / "PG_VERSION").is_file() or not self.is_running():
            return
        self._run_as_service(
            [str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop"]
        )

    def is_running(self) -> bool:
        res = subprocess.run(
            self._service_prefix() + [str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "status"],
            capture_output=True,
            text=True,
        )
        return res.returncode == 0

    # ---- schema -------------------------------------------------------------------------
    def apply_migrations(self, directory: Path = MIGRATIONS_DIR, compat: Path | None = COMPAT_FILE) -> list[str]:
        """Apply the compat SQL and then the migrations not yet recorded, each in its own transaction.

        Returns the names applied now. A recorded file whose content changed is an error:
        migrations are append-only (write a new one instead). Names recorded before the
        Supabase CLI layout are renamed in the ledger first (LEGACY_NAMES).
        """
        applied_now: list[str] = []
        with self.connect() as conn:
            conn.execute(
                "create schema if not exists localrt_meta;"
                "create table if not exists localrt_meta.schema_migrations ("
                " name text primary key, sha256 text not null,"
                " applied_at timestamptz not null default now())"
            )
            with conn.transaction():
                conn.execute(
                    "update localrt_meta.schema_migrations m set name = l.new"
                    " from unnest(%s::text[], %s::text[]) as l(old, new)"
                    " where m.name = l.old"
                    " and not exists (select 1 from localrt_meta.schema_migrations n where n.name = l.new)",
                    (list(LEGACY_NAMES), list(LEGACY_NAMES.values())),
                )
            done: dict[str, str] = dict(
                conn.execute("select name, sha256 from localrt_meta.schema_migrations").fetchall()
            )
            for path in [*([compat] if compat is not None else []), *migration_files(directory)]:
                text = path.read_text()
                digest = hashlib.sha256(text.encode()).hexdigest()
                if path.name in done:
                    if done[path.name] != digest:
                        raise PostgresSetupError(
                            f"{path.name} changed after it was applied; add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(text.encode())
                    conn.execute(
                        "insert into localrt_meta.schema_migrations (name, sha256) values (%s, %s)",
                        (path.name, digest),
                    )
                applied_now.append(path.name)
            # The password is local-only state, so it is set here rather than in a migration.
            conn.execute(
                sql.SQL("alter role authenticator with login password {}").format(
                    sql.Literal(self.authenticator_password)
                )
            )
        return applied_now

    def seed(self, path: Path = SEED_FILE) -> None:
        """Run the idempotent seed in one transaction."""
        with self.connect() as conn, conn.transaction():
            conn.execute(path.read_text().encode())

    # ---- internals ----------------------------------------------------------------------
    def _create_database(self) -> None:
        with psycopg.connect(
            f"postgresql://postgres:{self.superuser_password}@127.0.0.1:{self.port}/postgres",
            autocommit=True,
        ) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (self.dbname,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(self.dbname)))

    def _load_secrets(self) -> dict[str, str]:
        if not self._secrets:
            path = self.data_dir / SECRETS_FILE
            if not path.is_file():
                raise PostgresSetupError(f"{path} missing: was this cluster created by localrt.postgres?")
            self._secrets = json.loads(path.read_text())
        return self._secrets

    def _service_prefix(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        _ensure_service_user()
        return ["runuser", "-u", SERVICE_USER, "--"]

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            user = _ensure_service_user()
            os.chown(path, user.pw_uid, user.pw_gid)

    def _run_as_service(self, cmd: list[str]) -> None:
        res = subprocess.run(self._service_prefix() + cmd, capture_output=True, text=True, cwd="/")
        if res.returncode != 0:
            raise PostgresSetupError(
                f"{' '.join(cmd[:1])} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}\n"
                f"(the `{SERVICE_USER}` user must be able to reach {self.data_dir})"
            )


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrt.postgres", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "migrate", "seed", "status"])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dbname", default="cmgsite")
    parser.add_argument("--no-migrate", action="store_true", help="start only")
    args = parser.parse_args(argv)
    cluster = PgCluster(data_dir=args.data_dir, port=args.port, dbname=args.dbname)
    try:
        if args.command == "start":
            cluster.start()
            if not args.no_migrate:
                for name in cluster.apply_migrations():
                    print(f"applied {name}", file=sys.stderr)
                cluster.seed()
            print(cluster.dsn)
        elif args.command == "stop":
            cluster.stop()
        elif args.command == "migrate":
            for name in cluster.apply_migrations():
                print(f"applied {name}", file=sys.stderr)
        elif args.command == "seed":
            cluster.seed()
        elif args.command == "status":
            running = cluster.is_running()
            print("running" if running else "stopped")
            return 0 if running else 3
    except PostgresSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
