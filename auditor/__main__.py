"""`python -m yumai_audit`: the same command line as `yumai-audit`."""
from .cli import main

main()
