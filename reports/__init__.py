"""HTML reports (jinja2, autoescaped; nothing from the database is ever markup)."""
